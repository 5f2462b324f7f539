"""Which of the user's tensors is which canonical key.

Two ways, tried in this order:

* by names: the user's keys follow a naming scheme the registry knows
  (:mod:`conformance.formats.naming`: canonical/torchvision, GluonCV, Caffe, TF-slim,
  pytorch-cifar100, Gluon's) and give exactly the plan's keys and shapes;
* by structure: the order in which the model *uses* its parametrised layers in a
  forward pass, matched to the plan's units in data-flow order by shape. A unit may
  be matched once every unit it reads from was (a block's four branches in any
  order, an aux head once its tap ran), so a model that computes its branches in
  another order still pairs; a unit never used in the forward pass (torchvision's
  aux heads in eval mode) is taken in the order the model declares it.

The framework adapters (:mod:`.taps`) turn a model into :class:`Layer` records with
tensors already in canonical layouts (OIHW kernels, dense (out, in)); everything here
is plain numpy. Where a layer cannot be paired, :class:`PairingError` names the unit,
what the variant expects and what was found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import spec
from ..canonical import bn_suffixes, canonical_shapes, conv_key, conv_shapes, dense_shapes
from ..formats import naming
from ..spec import ConvUnit, Dense, InceptionUnit, Plan, ResidualUnit

CONV, NORM, DENSE = "conv", "norm", "dense"
NORM_ROLES = ("weight", "bias", "running_mean", "running_var")


def kind_of(tensors: Mapping[str, Any]) -> str | None:
    """A layer's kind from its tensors, in the canonical roles every adapter names them
    by (any array with a ``shape``): BatchNorm's statistics, else a 4-D or 2-D weight."""
    if "running_mean" in tensors and "running_var" in tensors:
        return NORM
    weight = tensors.get("weight")
    rank = None if weight is None else len(weight.shape)
    return CONV if rank == 4 else DENSE if rank == 2 else None


class PairingError(ValueError):
    """The user's tensors do not fit the variant; the message is the first mismatch.
    ``matched``: how many units paired before it (how close the variant came)."""

    def __init__(self, message: str, matched: int = 0) -> None:
        super().__init__(message)
        self.matched = matched


@dataclass(frozen=True, eq=False)
class Layer:
    """One parametrised layer of the user's model. ``kind``: conv, norm, dense, or the
    class name of a layer no GoogLeNet has; ``tensors``: role (weight, bias,
    running_mean, running_var) -> value in canonical layout; ``keys``: role -> the
    user's own key; ``used``: whether the forward pass ran it."""

    name: str
    kind: str
    tensors: Mapping[str, np.ndarray]
    keys: Mapping[str, str]
    used: bool = True
    type_name: str = ""

    def describe(self) -> str:
        w = self.tensors.get("weight")
        what = f"`{self.name}` ({self.type_name or self.kind})"
        if self.kind == CONV and w is not None:
            return f"{what}: conv {w.shape[2]} x {w.shape[3]}, {w.shape[1]} -> {w.shape[0]} channels"
        if self.kind == DENSE and w is not None:
            return f"{what}: dense {w.shape[1]} -> {w.shape[0]}"
        if self.kind == NORM:
            return f"{what}: BatchNorm over {self.tensors['running_mean'].shape[0]} channels"
        return what


@dataclass
class Pairing:
    """The user's tensors as canonical parameters of ``plan``."""

    plan: Plan
    params: dict[str, np.ndarray]  # canonical key -> value, canonical layout and order
    keys: dict[str, str]  # canonical key -> the user's key
    modules: dict[str, tuple[str, ...]]  # unit name -> the user's layers holding it
    method: str  # "names (canonical)", "structure"
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------

_BRANCH = re.compile(r"^(?P<block>[^.]+)\.branch(?P<b>\d)(?:\.(?P<i>\d+))?$")
SOURCES = {
    "googlenet": "the paper's",
    "googlenet_bn": "torchvision's",
    "googlenet_gluoncv": "GluonCV's",
    "googlenet_lrn": "Caffe's",
    "googlenet_slim": "TF-slim's",
    "googlenet_d2l": "d2l's",
    "googlenet_cifar": "pytorch-cifar100's",
    "inception_mnist": "the lecture's",
    "residual_mnist": "the lecture's",
}


def unit_words(name: str) -> str:
    """``inception3a.branch3.1`` -> ``inception3a branch 3 (inception3a.branch3.1)``."""
    m = _BRANCH.match(name)
    return f"{m['block']} branch {m['b']} ({name})" if m else name


def whose(p: Plan) -> str:
    return SOURCES.get(p.variant.name, f"`{p.variant.name}`'s")


def expected_words(unit: ConvUnit | Dense) -> str:
    if isinstance(unit, Dense):
        return f"dense {unit.in_features} -> {unit.out_features}"
    extras = [e for e, on in (("bias", unit.bias), ("BatchNorm", unit.norm is not None)) if on]
    return f"conv {unit.kernel} x {unit.kernel}, {unit.in_channels} -> {unit.out_channels} channels" + (
        f" ({' and '.join(extras)})" if extras else " (no bias, no BatchNorm)"
    )


# --------------------------------------------------------------------------------------
# The plan's units in data-flow order
# --------------------------------------------------------------------------------------


@dataclass
class _Chain:
    """Units that run one after another; ``after``: the chains that must finish first."""

    units: list[ConvUnit | Dense]
    after: list[int]
    stage: str  # the stage it belongs to (an aux head: its name)
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.done == len(self.units)


def _chains(p: Plan) -> list[_Chain]:
    chains: list[_Chain] = []
    before: list[int] = []  # the chains the next stage waits for
    finished_at: dict[str, list[int]] = {}
    for stage in p.stages:
        if isinstance(stage, ConvUnit):
            chains.append(_Chain([stage], list(before), stage.name))
            before = [len(chains) - 1]
        elif isinstance(stage, InceptionUnit):
            start = len(chains)
            for branch in stage.branches:
                chains.append(_Chain([op for op in branch if isinstance(op, ConvUnit)], list(before), stage.name))
            before = list(range(start, len(chains)))
        elif isinstance(stage, ResidualUnit):
            chains.append(_Chain([stage.conv1, stage.conv2], list(before), stage.name))
            before = [len(chains) - 1]
        finished_at[stage.name] = list(before)
    for head in p.aux:
        chains.append(_Chain([head.conv, head.fc1, head.fc2], finished_at[head.tap], head.name))
    chains.append(_Chain([p.fc], list(before), p.fc.name))
    return [c for c in chains if c.units]


def _frontier(chains: list[_Chain]) -> Iterator[_Chain]:
    """The chains whose next unit may run now: trunk first, in table order."""
    for c in chains:
        if not c.finished and all(chains[i].finished for i in c.after):
            yield c


# --------------------------------------------------------------------------------------
# Structural pairing
# --------------------------------------------------------------------------------------


@dataclass
class _Group:
    """A unit as the user's model holds it: a conv (+ its BatchNorm), or a dense layer."""

    main: Layer
    norm: Layer | None = None

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.main,) if self.norm is None else (self.main, self.norm)


def _groups(layers: Sequence[Layer]) -> list[_Group]:
    """Used layers first (in the order used), then the unused ones (in declaration
    order); a BatchNorm joins the conv used just before it, over the same channels."""
    ordered = [x for x in layers if x.used] + [x for x in layers if not x.used]
    groups: list[_Group] = []
    for layer in ordered:
        prev = groups[-1] if groups else None
        if (
            layer.kind == NORM
            and prev is not None
            and prev.main.kind == CONV
            and prev.norm is None
            and prev.main.used == layer.used
            and prev.main.tensors["weight"].shape[0] == layer.tensors["running_mean"].shape[0]
        ):
            prev.norm = layer
        else:
            groups.append(_Group(layer))
    return groups


def _mismatch(unit: ConvUnit | Dense, g: _Group, p: Plan) -> str | None:
    """Why the group cannot hold the unit (None: it can)."""
    main, w = g.main, g.main.tensors.get("weight")
    if main.kind not in (CONV, DENSE) or w is None:
        return f"your model uses {main.describe()}, which no GoogLeNet has"
    if isinstance(unit, Dense):
        if main.kind == CONV and (w.shape[2:] != (1, 1) or g.norm is not None):  # a 1x1 conv classifier is a dense
            return f"your {main.describe()} is a conv; {whose(p)} is a {expected_words(unit)}"
        if w.shape[1] != unit.in_features:
            return f"your {main.describe()} reads {w.shape[1]} features; {whose(p)} reads {unit.in_features}"
        if w.shape[0] != unit.out_features:
            return f"your {main.describe()} gives {w.shape[0]} outputs; {whose(p)} gives {unit.out_features}"
        if "bias" not in main.tensors:
            return f"your {main.describe()} has no bias; {whose(p)} has one"
        return None
    if main.kind == DENSE:
        return f"your {main.describe()} is a dense layer; {whose(p)} is a {expected_words(unit)}"
    if w.shape[2] != unit.kernel or w.shape[3] != unit.kernel:
        return f"your kernel is {w.shape[2]} x {w.shape[3]}, {whose(p)} is {unit.kernel} x {unit.kernel}"
    if w.shape[1] != unit.in_channels:
        return f"your conv reads {w.shape[1]} channels, {whose(p)} reads {unit.in_channels}"
    if w.shape[0] != unit.out_channels:
        return f"your conv gives {w.shape[0]} channels, {whose(p)} gives {unit.out_channels}"
    if ("bias" in main.tensors) != unit.bias:
        yours, theirs = ("has a", "has none") if unit.bias is False else ("has no", "has one")
        return f"your conv {yours} bias; {whose(p)} {theirs}"
    if (g.norm is not None) != (unit.norm is not None):
        yours, theirs = ("", "is not") if unit.norm is None else ("not ", "is")
        return f"your conv is {yours}followed by a BatchNorm; {whose(p)} {theirs}"
    if g.norm is not None and unit.norm is not None and ("weight" in g.norm.tensors) != unit.norm.scale:
        yours, theirs = ("has no", "has one") if unit.norm.scale else ("has a", "has none")
        return f"your BatchNorm {yours} scale; {whose(p)} {theirs}"
    return None


def _likeness(unit: ConvUnit | Dense, g: _Group) -> int:
    """How many of a unit's numbers the group has: the unit a mismatch is reported against."""
    w = g.main.tensors.get("weight")
    if w is None or w.ndim not in (2, 4):
        return 0
    if isinstance(unit, Dense):
        return (w.ndim == 2) + (w.shape[0] == unit.out_features) + (w.shape[1] == unit.in_features)
    if w.ndim != 4:
        return 0
    return 1 + (w.shape[0] == unit.out_channels) + (w.shape[1] == unit.in_channels) + (w.shape[2] == unit.kernel)


def _take(unit: ConvUnit | Dense, g: _Group, params: dict, keys: dict) -> None:
    main = g.main
    if isinstance(unit, Dense):
        w = main.tensors["weight"]
        params[f"{unit.name}.weight"] = w.reshape(w.shape[0], w.shape[1])
        params[f"{unit.name}.bias"] = main.tensors["bias"]
        keys[f"{unit.name}.weight"], keys[f"{unit.name}.bias"] = main.keys["weight"], main.keys["bias"]
        return
    key = conv_key(unit)
    for role in ("weight", "bias") if unit.bias else ("weight",):
        params[f"{key}.{role}"], keys[f"{key}.{role}"] = main.tensors[role], main.keys[role]
    if g.norm is not None:
        for role in bn_suffixes(unit):
            params[f"{unit.name}.bn.{role}"], keys[f"{unit.name}.bn.{role}"] = g.norm.tensors[role], g.norm.keys[role]


def by_structure(p: Plan, layers: Sequence[Layer], probe: bool = True) -> Pairing:
    """Pair the layers, in the order the model uses them, with the plan's units. Where a
    layer fits two units (inception3b's branch 1 and branch 2's reduction are both 1x1
    256 -> 128), both are tried: a search over the ready units, which forgets how a
    finished block was assigned (the state is then the same), so it stays linear.
    ``probe``: on a mismatch, try the pairing without that layer, to say "a layer the
    variant lacks" when that is what it is."""
    chains = _chains(p)
    groups = _groups(layers)
    total = sum(len(c.units) for c in chains)
    failed: set[tuple[int, ...]] = set()
    deepest: list[tuple[int, str]] = [(-1, "")]
    chosen: list[tuple[ConvUnit | Dense, _Group]] = []

    def why_not(i: int, ready: list[_Chain]) -> str:
        g = groups[i]
        if not ready:
            return f"your model has more than {p.variant.name}: after its last unit comes {g.main.describe()}"
        chain = max(ready, key=lambda c: _likeness(c.units[c.done], g))
        unit = chain.units[chain.done]
        if g.main.kind == DENSE and all(isinstance(c.units[c.done], ConvUnit) for c in ready):
            return (
                f"your model has no {chain.stage}: it goes on to {g.main.describe()} where {whose(p)} runs "
                f"{unit_words(unit.name)}, a {expected_words(unit)}"
            )
        if probe and i + 1 < len(groups):  # does the rest pair without this layer?
            try:
                by_structure(p, [x for x in layers if all(x is not y for y in g.layers)], probe=False)
            except PairingError:
                pass
            else:
                lacks = f"your model has a layer {p.variant.name} lacks: {g.main.describe()}"
                return f"{lacks}, before {unit_words(unit.name)}"
        return f"{unit_words(unit.name)}: {_mismatch(unit, g, p)}{_another(p, g, unit)}"

    def search(i: int) -> bool:
        state = (i, *(c.done for c in chains))
        if state in failed:
            return False
        ready = list(_frontier(chains))
        if i == len(groups):
            if all(c.finished for c in chains):
                return True
            if i > deepest[0][0]:
                unit = (
                    ready[0].units[ready[0].done] if ready else next(c.units[c.done] for c in chains if not c.finished)
                )
                deepest[0] = (
                    i,
                    f"{unit_words(unit.name)}: your model has no layer for it "
                    f"({whose(p)} is a {expected_words(unit)}); it ends {i} units into {p.variant.name}'s {total}",
                )
            failed.add(state)
            return False
        fitting = [c for c in ready if _mismatch(c.units[c.done], groups[i], p) is None]
        for chain in fitting:
            chosen.append((chain.units[chain.done], groups[i]))
            chain.done += 1
            if search(i + 1):
                return True
            chain.done -= 1
            chosen.pop()
        if not fitting and i > deepest[0][0]:
            deepest[0] = (i, why_not(i, ready))
        failed.add(state)
        return False

    if not search(0):
        at, message = deepest[0]
        raise PairingError(message, max(at, 0))
    params: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    modules: dict[str, tuple[str, ...]] = {}
    for unit, g in chosen:
        _take(unit, g, params, keys)
        modules[unit.name] = tuple(x.name for x in g.layers)
    ordered = {k: params[k] for k in canonical_shapes(p)}
    return Pairing(p, ordered, {k: keys[k] for k in ordered}, modules, "structure (the order your layers are used)")


def _another(p: Plan, g: _Group, unit: ConvUnit | Dense) -> str:
    """``; torchvision's variant is `googlenet_bn``` where another variant's unit of the
    same name is what the user has."""
    for name in spec.VARIANTS:
        if name == p.variant.name:
            continue
        try:
            other = spec.resolve(name, p.num_classes, bool(spec.VARIANTS[name].aux) and bool(p.aux))
        except spec.SpecError:
            continue
        twin = next((u for u in other.units() if u.name == unit.name), None)
        if twin is not None and _mismatch(twin, g, other) is None:
            return f"; {whose(other)} variant is `{name}`"
    return ""


# --------------------------------------------------------------------------------------
# Pairing by names
# --------------------------------------------------------------------------------------


def unit_of(p: Plan) -> dict[str, str]:
    """Canonical key -> the unit that owns it."""
    owner: dict[str, str] = {}
    for u in p.units():
        owner.update(dict.fromkeys(conv_shapes(u) if isinstance(u, ConvUnit) else dense_shapes(u), u.name))
    return owner


def by_names(p: Plan, state: Mapping[str, np.ndarray]) -> Pairing | None:
    """The pairing if the user's keys, under a known naming scheme, are exactly the
    plan's keys with its shapes; None otherwise (structure decides then)."""
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    scheme = naming.detect(keys)
    try:
        names = naming.canonical_names(keys, scheme, p)
    except (naming.NamingError, KeyError):
        return None
    expected = canonical_shapes(p)
    found = {canonical: key for key, canonical in names.items()}
    if set(found) != set(expected) or any(tuple(state[found[k]].shape) != s for k, s in expected.items()):
        return None
    owner = unit_of(p)
    modules: dict[str, tuple[str, ...]] = {}
    for k in expected:
        layer = found[k].rsplit(".", 1)[0]
        modules[owner[k]] = tuple(dict.fromkeys((*modules.get(owner[k], ()), layer)))
    return Pairing(
        p,
        {k: np.asarray(state[found[k]]) for k in expected},
        {k: found[k] for k in expected},
        modules,
        f"names ({naming.SCHEMES[scheme].description})",
    )
