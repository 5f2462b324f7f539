"""Other naming schemes <-> canonical keys, derived from the plan (never by order).

* ``canonical``: torchvision's state_dict names (also the PyTorch post's, and what
  ``impl_torch`` writes).
* ``gluon``: what ``impl_mxnet``'s ``save_parameters`` writes: the canonical names,
  BatchNorm's scale and shift called ``gamma`` / ``beta``.
* ``gluoncv``: what GluonCV 0.10's ``googlenet`` writes. Its blocks are positional
  ``HybridSequential``s: a conv unit is ``(conv, bn, relu)`` -> ``conv1.0.weight``,
  ``conv1.1.gamma``; an Inception block is ``HybridConcurrent`` of four branches ->
  ``inception3a.1.1.0.weight`` is branch 2, op 1 (the pool opening branch 4 counts as
  op 0); an aux head is ``(pool, conv unit, flatten, fc1, relu, dropout, fc2)`` ->
  ``aux1.1`` / ``aux1.3`` / ``aux1.6``; fc is ``output``, saved a second time as
  ``head.2`` because the same Dense sits in ``self.head`` too.
* ``cifar100``: what pytorch-cifar100's ``GoogleNet`` (seed 004) writes, for
  ``googlenet_cifar``: the stem is ``prelayer`` (conv, bn, relu) x 3 -> ``prelayer.3``
  is conv2; blocks are ``a3`` ... ``b5`` with branches ``b1`` ... ``b4``, each a
  ``Sequential`` of (conv, bn, relu) -> ``a3.b3.6`` is branch 3's third conv (after the
  pool, at 0, in ``b4``); fc is ``linear``. Read only (``port`` from a ``.pth``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .canonical import BN_SUFFIXES, canonical_shapes
from .spec import ConvUnit, InceptionBlock, Plan, configure, plan

GLUON_BN = {".bn.weight": ".bn.gamma", ".bn.bias": ".bn.beta"}
_GLUONCV_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean",
               "running_var": "running_var"}
_GLUONCV_AUX = {"conv": "1", "fc1": "3", "fc2": "6"}  # positions in GluonCV's _make_aux
GLUONCV_ALIASES = {"head.2.weight": "output.weight", "head.2.bias": "output.bias"}


def gluon_name(key: str) -> str:
    """Canonical key -> Gluon structural name (``conv1.bn.weight`` -> ``conv1.bn.gamma``)."""
    for ours, theirs in GLUON_BN.items():
        if key.endswith(ours):
            return key[: -len(ours)] + theirs
    return key


def _gluoncv_units(p: Plan) -> dict[str, str]:
    """Canonical unit prefix -> GluonCV unit prefix."""
    units: dict[str, str] = {}
    for stage in p.stages:
        if isinstance(stage, ConvUnit):
            units[stage.name] = stage.name
        elif isinstance(stage, InceptionBlock):
            for b, branch in enumerate(stage.branches):
                for i, op in enumerate(branch):
                    if isinstance(op, ConvUnit):
                        units[op.name] = f"{stage.name}.{b}.{i}"
    for head in p.aux:
        for part, position in _GLUONCV_AUX.items():
            units[f"{head.name}.{part}"] = f"{head.name}.{position}"
    units["fc"] = "output"
    return units


def gluoncv_names(p: Plan) -> dict[str, str]:
    """Canonical key -> GluonCV key, for every key of the plan."""
    units = _gluoncv_units(p)
    names: dict[str, str] = {}
    for key in canonical_shapes(p):
        for prefix in (key.rsplit(".", 2)[0], key.rsplit(".", 1)[0]):
            if prefix in units:  # "<unit>.conv.weight" / "<unit>.bn.bias" or "<dense>.weight"
                rest = key[len(prefix) + 1:]
                break
        else:
            raise KeyError(key)
        kind, _, suffix = rest.rpartition(".")
        g = units[prefix]
        names[key] = (f"{g}.0.{suffix}" if kind == "conv" else
                      f"{g}.1.{_GLUONCV_BN[suffix]}" if kind == "bn" else f"{g}.{suffix}")
    return names


def cifar100_names(p: Plan) -> dict[str, str]:
    """Canonical key -> pytorch-cifar100 key, for every key of the plan."""
    names: dict[str, str] = {}
    for i, stage in enumerate(s for s in p.stages if isinstance(s, ConvUnit)):
        names[f"{stage.name}.conv.weight"] = f"prelayer.{3 * i}.weight"  # (conv, bn, relu) x 3
        names.update({f"{stage.name}.bn.{s}": f"prelayer.{3 * i + 1}.{s}" for s in BN_SUFFIXES})
    for stage in p.stages:
        if not isinstance(stage, InceptionBlock):
            continue
        block = stage.name[-1] + stage.name[-2]  # inception3a -> a3
        for b, branch in enumerate(stage.branches, 1):
            for i, op in enumerate(branch):
                if isinstance(op, ConvUnit):  # a pool is one module; a conv unit three
                    at = 3 * i - 2 * (b == 4)
                    prefix = f"{block}.b{b}"
                    names.update({f"{op.name}.conv.{s}": f"{prefix}.{at}.{s}" for s in ("weight", "bias")})
                    names.update({f"{op.name}.bn.{s}": f"{prefix}.{at + 1}.{s}" for s in BN_SUFFIXES})
    names.update({f"{p.fc.name}.{s}": f"linear.{s}" for s in ("weight", "bias")})
    return names


def detect(keys: list[str] | tuple[str, ...] | Mapping[str, object]) -> str:
    """Which scheme a set of keys follows."""
    keys = list(keys)
    if any(k.startswith("conv1.0.") for k in keys) or "output.weight" in keys:
        return "gluoncv"
    if any(k.startswith("prelayer.0.") for k in keys):
        return "cifar100"
    if any(k.endswith((".bn.gamma", ".bn.beta")) for k in keys):
        return "gluon"
    return "canonical"


def to_canonical(raw: Mapping[str, np.ndarray], scheme: str, p: Plan) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename ``raw`` from ``scheme`` to canonical keys. Keys the scheme does not know
    keep their name, so strict validation reports them. Returns (params, notes)."""
    notes: list[str] = []
    if scheme == "canonical":
        return dict(raw), notes
    if scheme == "gluon":
        inverse = {gluon_name(k): k for k in _all_keys(p)}
        return {inverse.get(k, k): v for k, v in raw.items()}, notes
    if scheme == "cifar100":
        inverse = {c: k for k, c in cifar100_names(p).items()}
        return {inverse.get(k, k): v for k, v in raw.items() if not k.endswith("num_batches_tracked")}, notes
    inverse = {g: k for k, g in gluoncv_names(_with_aux(p)).items()}
    raw = dict(raw)
    for alias, key in GLUONCV_ALIASES.items():
        if alias in raw:
            if key in raw and not np.array_equal(raw.pop(alias), raw[key]):
                raise ValueError(f"GluonCV file: {alias} and {key} should be the same tensor and differ")
            notes.append(f"dropped GluonCV's duplicate {alias} (the same tensor as {key})")
    return {inverse.get(k, k): v for k, v in raw.items()}, notes


def from_canonical(params: Mapping[str, np.ndarray], scheme: str, p: Plan) -> dict[str, np.ndarray]:
    if scheme == "canonical":
        return dict(params)
    if scheme == "gluon":
        return {gluon_name(k): v for k, v in params.items()}
    names = gluoncv_names(p)
    out = {names[k]: v for k, v in params.items()}
    out.update({alias: out[key] for alias, key in GLUONCV_ALIASES.items()})  # as GluonCV saves it
    return out


def _with_aux(p: Plan) -> Plan:
    """The plan with aux heads, so that names of a file with or without them map."""
    if p.aux or p.variant.aux is None:
        return p
    v = p.variant
    return plan(configure(v, v.num_classes, True, transform_input=v.transform_input))


def _all_keys(p: Plan) -> list[str]:
    return list(canonical_shapes(_with_aux(p)))
