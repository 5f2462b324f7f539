"""Naming schemes: the names other code writes for the canonical keys, each derived
from the plan (never by order), in one registry.

* ``canonical``: torchvision's state_dict names (also ``impl_torch``'s and WZMIAOMIAO's):
  ``inception3a.branch2.1.conv.weight``;
* ``gluon``: what ``impl_mxnet``'s ``save_parameters`` writes, BatchNorm's scale and
  shift called ``gamma``/``beta``: ``conv1.bn.gamma``;
* ``gluoncv``: GluonCV 0.10's ``googlenet``: ``inception3a.1.1.0.weight``;
* ``cifar100``: pytorch-cifar100's ``GoogleNet`` (``googlenet_cifar``): ``a3.b3.6.bias``;
* ``caffe``: Caffe's ``bvlc_googlenet`` (a ``.caffemodel``), a layer's blob as pycaffe
  indexes it: ``inception_3a/5x5_reduce[0]`` (the weights), ``loss3/classifier[1]``.

GluonCV's blocks are positional ``HybridSequential``s: a conv unit is ``(conv, bn,
relu)`` -> ``conv1.0.weight``, ``conv1.1.gamma``; an Inception block is a
``HybridConcurrent`` of four branches -> ``inception3a.1.1.0.weight`` is branch 2, op 1
(the pool opening branch 4 counts as op 0); an aux head is ``(pool, conv unit, flatten,
fc1, relu, dropout, fc2)`` -> ``aux1.1`` / ``aux1.3`` / ``aux1.6``; fc is ``output``,
saved a second time as ``head.2`` because the same Dense sits in ``self.head`` too.
pytorch-cifar100's stem is ``prelayer`` (conv, bn, relu) x 3 -> ``prelayer.3`` is conv2;
blocks are ``a3`` ... ``b5`` with branches ``b1`` ... ``b4``, each a ``Sequential`` of
(conv, bn, relu) -> ``a3.b3.6`` is branch 3's third conv (after the pool, at 0, in
``b4``); fc is ``linear``.

* ``slim``: TF-slim's ``inception_v1`` (a TensorFlow checkpoint, ``googlenet_slim``):
  ``InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/weights``, ``.../BatchNorm/beta``.

TF-slim names the trunk by groups that a max pool opens (``MaxPool_2a_3x3``, then
``Conv2d_2b_1x1``, ``Conv2d_2c_3x3``; ``MaxPool_3a_3x3``, then ``Mixed_3b``, ...), a
stage by its group, its letter within it and, for a conv, its kernel; a block's
branches ``Branch_0`` ... ``Branch_3``, their ops lettered from ``0a`` (the pool
opening ``Branch_3`` is ``MaxPool_0a_3x3``, so its conv is ``Conv2d_0b_1x1``). One name
breaks the rule upstream and is kept: ``Mixed_5b/Branch_2/Conv2d_0a_3x3``. A conv's
kernel is ``weights``, its BatchNorm ``BatchNorm/beta``, ``moving_mean`` and
``moving_variance`` (no ``gamma``: no scale); the classifier is the 1x1 conv
``Logits/Conv2d_0c_1x1`` with ``weights`` and ``biases``.

Caffe names a conv by its kernel and what it feeds (bvlc_googlenet's deploy.prototxt):
the stem by the pool it precedes, ``conv1/7x7_s2``, then ``conv2/3x3_reduce`` (the 1x1
feeding ``conv2/3x3``); a block's branches ``inception_3a/1x1``, ``3x3_reduce`` and
``3x3``, ``5x5_reduce`` and ``5x5``, and ``pool_proj`` (the 1x1 after the pool); the aux
heads ``loss1/conv``, ``loss1/fc``, ``loss1/classifier`` (``loss2/...``), and fc
``loss3/classifier``. Blob 0 is the weights, blob 1 the bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..canonical import BN_SUFFIXES, canonical_shapes, gluon_name
from ..spec import ConvUnit, InceptionUnit, Op, Plan, Pool, with_options

Params = dict[str, np.ndarray]


class NamingError(ValueError):
    """An unknown naming scheme, or a file whose names contradict themselves."""


def _gluoncv_units(plan: Plan) -> dict[str, str]:
    """Canonical unit prefix -> GluonCV unit prefix."""
    units: dict[str, str] = {}
    for stage in plan.stages:
        if isinstance(stage, ConvUnit):
            units[stage.name] = stage.name
        elif isinstance(stage, InceptionUnit):
            for b, branch in enumerate(stage.branches):
                for i, op in enumerate(branch):
                    if isinstance(op, ConvUnit):
                        units[op.name] = f"{stage.name}.{b}.{i}"
    for head in plan.aux:
        for part, position in {"conv": "1", "fc1": "3", "fc2": "6"}.items():  # positions in GluonCV's _make_aux
            units[f"{head.name}.{part}"] = f"{head.name}.{position}"
    units[plan.fc.name] = "output"
    return units


def gluoncv_names(plan: Plan) -> dict[str, str]:
    """Canonical key -> GluonCV key, for every key of the plan."""
    units = _gluoncv_units(plan)
    bn = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}
    names: dict[str, str] = {}
    for key in canonical_shapes(plan):
        for prefix in (key.rsplit(".", 2)[0], key.rsplit(".", 1)[0]):
            if prefix in units:  # "<unit>.conv.weight" / "<unit>.bn.bias" or "<dense>.weight"
                rest = key[len(prefix) + 1 :]
                break
        else:
            raise KeyError(key)
        kind, _, suffix = rest.rpartition(".")
        g = units[prefix]
        names[key] = f"{g}.0.{suffix}" if kind == "conv" else f"{g}.1.{bn[suffix]}" if kind == "bn" else f"{g}.{suffix}"
    return names


GLUONCV_ALIASES = {"head.2.weight": "output.weight", "head.2.bias": "output.bias"}  # the classifier, saved twice


def _gluoncv_read(raw: Params) -> tuple[Params, list[str]]:
    """GluonCV saves the classifier twice: keep one copy, after checking the two agree."""
    raw, notes = dict(raw), []
    for alias, key in GLUONCV_ALIASES.items():
        if alias not in raw:
            continue
        duplicate = raw.pop(alias)
        if key not in raw:
            raw[key] = duplicate
            notes.append(f"took GluonCV's {alias} as {key}, which the file lacks")
        elif not np.array_equal(duplicate, raw[key]):
            raise NamingError(f"GluonCV file: {alias} and {key} should be the same tensor and differ")
        else:
            notes.append(f"dropped GluonCV's duplicate {alias} (the same tensor as {key})")
    return raw, notes


def _gluoncv_write(params: Params) -> Params:
    return {**params, **{alias: params[key] for alias, key in GLUONCV_ALIASES.items()}}  # as GluonCV saves it


def cifar100_names(plan: Plan) -> dict[str, str]:
    """Canonical key -> pytorch-cifar100 key, for every key of the plan."""
    names: dict[str, str] = {}
    stem = [s for s in plan.stages if isinstance(s, ConvUnit)]
    for i, unit in enumerate(stem):
        names[f"{unit.name}.conv.weight"] = f"prelayer.{3 * i}.weight"  # (conv, bn, relu) x 3
        names.update({f"{unit.name}.bn.{s}": f"prelayer.{3 * i + 1}.{s}" for s in BN_SUFFIXES})
    for stage in plan.stages:
        if not isinstance(stage, InceptionUnit):
            continue
        block = stage.name[-1] + stage.name[-2]  # inception3a -> a3
        for b, branch in enumerate(stage.branches, 1):
            for i, op in enumerate(branch):
                if isinstance(op, ConvUnit):  # a pool is one module; a conv unit three
                    at = 3 * i - 2 * (b == 4)
                    prefix = f"{block}.b{b}"
                    names.update({f"{op.name}.conv.{s}": f"{prefix}.{at}.{s}" for s in ("weight", "bias")})
                    names.update({f"{op.name}.bn.{s}": f"{prefix}.{at + 1}.{s}" for s in BN_SUFFIXES})
    names.update({f"{plan.fc.name}.{s}": f"linear.{s}" for s in ("weight", "bias")})
    return names


def _caffe_conv(op: ConvUnit, chain: tuple[Op, ...], index: int) -> str:
    """Caffe's name for conv ``i`` of a chain: after a pool, its projection; a 1x1 that
    feeds a larger conv, that conv's reduction; else its kernel (and stride)."""
    if any(isinstance(o, Pool) for o in chain[:index]):
        return "pool_proj"
    after = next((o for o in chain[index + 1 :] if isinstance(o, ConvUnit)), None)
    if op.kernel == 1 and after is not None and after.kernel > 1:
        return f"{after.kernel}x{after.kernel}_reduce"
    return f"{op.kernel}x{op.kernel}" + (f"_s{op.stride}" if op.stride > 1 else "")


def _caffe_units(plan: Plan) -> dict[str, str]:
    """Canonical unit prefix -> Caffe layer name."""
    units: dict[str, str] = {}
    stem: list[ConvUnit] = []
    pools = 0
    for stage in plan.stages:
        if isinstance(stage, ConvUnit):
            stem.append(stage)
        elif isinstance(stage, Pool) and stem:  # the stem's convs before this pool: conv1, conv2
            pools += 1
            chain = tuple(stem)
            units.update({c.name: f"conv{pools}/{_caffe_conv(c, chain, i)}" for i, c in enumerate(chain)})
            stem = []
        elif isinstance(stage, InceptionUnit):
            block = stage.name.replace("inception", "inception_")
            for branch in stage.branches:
                for i, op in enumerate(branch):
                    if isinstance(op, ConvUnit):
                        units[op.name] = f"{block}/{_caffe_conv(op, branch, i)}"
    for i, head in enumerate(plan.aux, start=1):
        units.update({f"{head.name}.{part}": f"loss{i}/{name}" for part, name in CAFFE_AUX.items()})
    heads = len(plan.variant.aux.taps) if plan.variant.aux is not None else 0
    units[plan.fc.name] = f"loss{heads + 1}/classifier"  # after the variant's aux heads, built or not
    return units


CAFFE_AUX = {"conv": "conv", "fc1": "fc", "fc2": "classifier"}


def caffe_names(plan: Plan) -> dict[str, str]:
    """Canonical key -> Caffe blob key, for every key of the plan: a conv unit's or dense
    layer's weight is its layer's blob 0, its bias blob 1. Only nets Caffe's GoogLeNet
    names: conv units with a bias and without BatchNorm."""
    if plan.variant.convs.norm is not None or plan.variant.convs.plain or not plan.variant.convs.bias:
        raise NamingError(f"{plan.variant.name}'s conv units are not bvlc_googlenet's (conv + bias, no BatchNorm)")
    units = _caffe_units(plan)
    if len(set(units.values())) != len(units):
        raise NamingError(f"{plan.variant.name}: two of its units would have the same Caffe name")
    names: dict[str, str] = {}
    for key in canonical_shapes(plan):
        unit, _, kind = key.rpartition(".")
        unit = unit.removesuffix(".conv")  # a conv unit's "<unit>.conv.weight"; a dense layer's "<name>.weight"
        blob = {"weight": 0, "bias": 1}.get(kind)
        if unit not in units or blob is None:
            raise NamingError(f"{key}: no Caffe blob holds it")
        names[key] = f"{units[unit]}[{blob}]"
    return names


SLIM_SCOPE = "InceptionV1"
SLIM_LOGITS = "Logits/Conv2d_0c_1x1"  # slim's classifier: a 1x1 conv with biases
# Upstream's one name off its own rule (tf_slim/nets/inception_v1.py, Mixed_5b's Branch_2).
SLIM_QUIRKS = {"Mixed_5b/Branch_2/Conv2d_0b_3x3": "Mixed_5b/Branch_2/Conv2d_0a_3x3"}
SLIM_BN = {
    "bias": "BatchNorm/beta",
    "running_mean": "BatchNorm/moving_mean",
    "running_var": "BatchNorm/moving_variance",
}


def _slim_op(op: Op, letter: str) -> str:
    if isinstance(op, ConvUnit):
        return f"Conv2d_{letter}_{op.kernel}x{op.kernel}"
    if isinstance(op, Pool) and op.kind == "max":
        return f"MaxPool_{letter}_{op.kernel}x{op.kernel}"
    raise NamingError(f"{op.name}: TF-slim's inception_v1 has no such op")


def _slim_units(plan: Plan) -> dict[str, str]:
    """Canonical unit prefix -> TF-slim scope (without ``InceptionV1/``)."""
    units: dict[str, str] = {}
    group, letter = 1, 0
    for stage in plan.stages:
        if isinstance(stage, Pool):  # a max pool opens the next group
            group, letter = group + 1, 0
        at = f"{group}{chr(ord('a') + letter)}"
        letter += 1
        if isinstance(stage, ConvUnit):
            units[stage.name] = _slim_op(stage, at)
        elif isinstance(stage, InceptionUnit):
            for b, branch in enumerate(stage.branches):
                for i, op in enumerate(branch):
                    if isinstance(op, ConvUnit):
                        scope = f"Mixed_{at}/Branch_{b}/{_slim_op(op, '0' + chr(ord('a') + i))}"
                        units[op.name] = SLIM_QUIRKS.get(scope, scope)
    return units


def slim_names(plan: Plan) -> dict[str, str]:
    """Canonical key -> TF-slim variable name, for every key of the plan: conv units
    without bias, with a BatchNorm without scale, and no aux heads (TF-slim's own)."""
    norm = plan.variant.convs.norm
    if norm is None or norm.scale or plan.variant.convs.bias or plan.aux:
        raise NamingError(f"{plan.variant.name}'s units are not TF-slim's (no conv bias, BatchNorm without scale)")
    units = _slim_units(plan)
    names: dict[str, str] = {}
    for key in canonical_shapes(plan):
        if key.startswith(f"{plan.fc.name}."):
            kind = {"weight": "weights", "bias": "biases"}[key.rpartition(".")[2]]
            names[key] = f"{SLIM_SCOPE}/{SLIM_LOGITS}/{kind}"
            continue
        unit, part, kind = key.rsplit(".", 2)  # "<unit>.conv.weight", "<unit>.bn.running_mean"
        if unit not in units or (part, kind) not in (("conv", "weight"), *(("bn", k) for k in SLIM_BN)):
            raise NamingError(f"{key}: no TF-slim variable holds it")
        names[key] = f"{SLIM_SCOPE}/{units[unit]}/" + ("weights" if part == "conv" else SLIM_BN[kind])
    if len(set(names.values())) != len(names):
        raise NamingError(f"{plan.variant.name}: two of its keys would have the same TF-slim name")
    return names


def _no_change(raw: Params) -> tuple[Params, list[str]]:
    return dict(raw), []


@dataclass(frozen=True)
class Scheme:
    """One naming scheme: how to recognise it, and its name for every canonical key."""

    name: str
    description: str
    detects: Callable[[list[str]], bool]
    names: Callable[[Plan], dict[str, str]]  # canonical key -> this scheme's key
    on_read: Callable[[Params], tuple[Params, list[str]]] = field(default=_no_change)
    on_write: Callable[[Params], Params] = field(default=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # a second name of a key, saved twice


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (  # in the order detect() tries them
        Scheme(
            "caffe",
            "Caffe's bvlc_googlenet",
            lambda keys: any(k.endswith(("[0]", "[1]")) for k in keys),
            caffe_names,
        ),
        Scheme(
            "slim",
            "TF-slim's inception_v1",
            lambda keys: any(k.startswith(f"{SLIM_SCOPE}/") for k in keys),
            slim_names,
        ),
        Scheme(
            "gluoncv",
            "GluonCV's googlenet",
            lambda keys: any(k.startswith("conv1.0.") for k in keys) or "output.weight" in keys,
            gluoncv_names,
            _gluoncv_read,
            _gluoncv_write,
            GLUONCV_ALIASES,
        ),
        Scheme(
            "cifar100",
            "pytorch-cifar100's GoogleNet",
            lambda keys: any(k.startswith("prelayer.0.") for k in keys),
            cifar100_names,
        ),
        Scheme(
            "gluon",
            "Gluon's structural names",
            lambda keys: any(k.endswith((".bn.gamma", ".bn.beta")) for k in keys),
            lambda p: {k: gluon_name(k) for k in canonical_shapes(p)},
        ),
        Scheme(
            "canonical", "canonical (torchvision's)", lambda keys: True, lambda p: {k: k for k in canonical_shapes(p)}
        ),
    )
}


def scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise NamingError(f"naming scheme: unknown {name!r}; expected one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


def detect(keys: Iterable[str]) -> str:
    """Which scheme a set of keys follows."""
    keys = list(keys)
    return next(s.name for s in SCHEMES.values() if s.detects(keys))


def _with_aux(plan: Plan) -> Plan:
    """The plan with aux heads, so that names of a file with or without them map."""
    return plan if plan.aux or plan.variant.aux is None else with_options(plan, aux_logits=True)


def to_canonical(raw: Mapping[str, np.ndarray], name: str, plan: Plan) -> tuple[Params, list[str]]:
    """Rename ``raw`` from scheme ``name`` to canonical keys. Keys the scheme does not know
    keep their name, so strict validation reports them. Returns (params, notes)."""
    s = scheme(name)
    tensors, notes = s.on_read({k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")})
    inverse = {theirs: ours for ours, theirs in s.names(_with_aux(plan)).items()}
    return {inverse.get(k, k): v for k, v in tensors.items()}, notes


def canonical_names(keys: Iterable[str], name: str, plan: Plan) -> dict[str, str]:
    """File key -> canonical key by the names alone, before any tensor is read (so that
    declared shapes can be checked first). A second name of a key (GluonCV's ``head.2``)
    maps to the same canonical key; keys the scheme does not know keep their name;
    ``num_batches_tracked`` counters are left out."""
    s = scheme(name)
    inverse = {theirs: ours for ours, theirs in s.names(_with_aux(plan)).items()}
    out = {}
    for key in keys:
        if key.endswith("num_batches_tracked"):
            continue
        key_ = s.aliases.get(key, key)
        out[key] = inverse.get(key_, key_)
    return out


def from_canonical(params: Mapping[str, np.ndarray], name: str, plan: Plan) -> Params:
    """Canonical ``params`` under scheme ``name``'s keys."""
    s = scheme(name)
    names = s.names(_with_aux(plan))
    return s.on_write({names[k]: v for k, v in params.items()})
