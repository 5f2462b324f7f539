"""Replays: each inference mistake stated as a change to the plan, the canonical weights,
the input or the logits, which any correct implementation runs. ``verify``'s diagnosis
(``conformance.verify.diagnose``) replays the catalogue (:mod:`.pitfalls`) this way with
a user's weights, and hand-written PyTorch ports make their mistakes from their replay
(:func:`.mistakes.replayed`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import spec
from .locate import flattened, variant_eps

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Replay:
    """An inference mistake stated so that any correct implementation can make it: each
    change is applied to the result of the one before (``plan``, then ``params`` with the
    changed plan), and a mistake's changes follow another's, so two mistakes compose.
    Every change returns the same objects for what it leaves alone (the same array for an
    untouched weight, the same unit for an untouched op), so a run can tell where the
    network starts to differ."""

    plan: Callable[[spec.Plan], spec.Plan] | None = None  # the network built
    params: Callable[[spec.Plan, Params], Params] | None = None  # canonical weights as loaded
    inputs: Callable[[np.ndarray], np.ndarray] | None = None  # NCHW images, before transform_input
    logits: Callable[[np.ndarray], np.ndarray] | None = None  # what the model returns


def padded_at_the_end(params: Any) -> dict[str, np.ndarray]:
    """The 3x3 kernels of branch 3 zero-filled to 5x5 at the end, as
    ``np.pad(w, ((0, 0), (0, 0), (0, 2), (0, 2)))`` does: every window moves a pixel."""
    wide = (".branch3.1.conv.weight",)
    return {
        k: np.pad(w, ((0, 0), (0, 0), (0, 2), (0, 2))) if k.endswith(wide) and w.shape[-1] == 3 else w
        for k, w in params.items()
    }


OpChange = Callable[[Any], Any]


def map_ops(p: spec.Plan, change: OpChange) -> spec.Plan:
    """``p`` with ``change`` applied to every op: each stage, the ops inside its blocks, the
    aux heads' pool and conv, the head pool. ``change`` returns an op unchanged as itself."""

    def stage(s: spec.Stage) -> spec.Stage:
        if isinstance(s, spec.InceptionUnit):
            branches = tuple(tuple(change(op) for op in branch) for branch in s.branches)
            return s if branches == s.branches else dataclasses.replace(s, branches=branches)
        if isinstance(s, spec.ResidualUnit):
            conv1, conv2 = change(s.conv1), change(s.conv2)
            return s if (conv1, conv2) == (s.conv1, s.conv2) else dataclasses.replace(s, conv1=conv1, conv2=conv2)
        return change(s)

    aux = tuple(dataclasses.replace(a, pool=change(a.pool), conv=change(a.conv)) for a in p.aux)
    head_pool = None if p.head_pool is None else change(p.head_pool)
    return dataclasses.replace(p, stages=tuple(map(stage, p.stages)), aux=aux, head_pool=head_pool)


def ops_where(hit: Callable[[Any], bool], change: OpChange) -> Callable[[spec.Plan], spec.Plan]:
    return lambda p: map_ops(p, lambda op: change(op) if hit(op) else op)


def conv_weight(u: spec.ConvUnit) -> str:
    """The canonical key of a conv unit's kernel."""
    return f"{u.name}.weight" if u.plain else f"{u.name}.conv.weight"


def same_plan(op: Any) -> Any:
    """Keras's "same": TensorFlow's SAME padding, the 3x3/2 max pools without ceil rounding."""
    if isinstance(op, spec.ConvUnit):
        return dataclasses.replace(op, same=True, padding=0)
    return dataclasses.replace(op, same=True, padding=0, ceil_mode=False)


def floor_plan(op: Any) -> Any:
    return dataclasses.replace(op, ceil_mode=False)


def is_max_pool(op: Any) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "max" and op.ceil_mode


def transposed_kernels(p: spec.Plan, params: Params) -> Params:
    """What a kernel loaded through transpose(3, 2, 1, 0) as HWIO computes, as an OIHW
    kernel: its height and width swapped."""
    keys = {conv_weight(u) for u in p.conv_units() if u.kernel > 1}
    return {k: np.ascontiguousarray(w.transpose(0, 1, 3, 2)) if k in keys else w for k, w in params.items()}


def hwc_rows(p: spec.Plan, params: Params) -> Params:
    """A dense layer fed an (H, W, C) flatten through rows meant for (C, H, W), as an
    equivalent layer on PyTorch's (C, H, W) flatten: input j of the HWC order is input
    ``order[j]`` of the CHW one."""
    out = dict(params)
    for d in [*(a.fc1 for a in p.aux), p.fc]:
        if flattened(d):
            assert d.flattened_from is not None
            order = np.arange(d.in_features).reshape(d.flattened_from).transpose(1, 2, 0).reshape(-1)
            w = params[f"{d.name}.weight"]
            moved = np.empty_like(w)
            moved[:, order] = w
            out[f"{d.name}.weight"] = moved
    return out


def eps_plan(default: float) -> Callable[[spec.Plan], spec.Plan]:
    def plan(p: spec.Plan) -> spec.Plan:
        norm = p.variant.convs.norm
        assert norm is not None
        return map_ops(
            p,
            lambda op: (
                dataclasses.replace(op, norm=dataclasses.replace(op.norm, eps=default))
                if variant_eps(op, norm.eps)
                else op
            ),
        )

    return plan


def tf_alpha_plan(p: spec.Plan) -> spec.Plan:
    return map_ops(p, lambda op: dataclasses.replace(op, alpha=op.alpha * op.size) if isinstance(op, spec.LRN) else op)


def untransformed(p: spec.Plan) -> spec.Plan:
    return dataclasses.replace(p, transform=None, options=dataclasses.replace(p.options, transform_input=False))


def bgr(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, ::-1])


def paper_5x5_plan(op: Any) -> Any:
    return dataclasses.replace(op, kernel=5, padding=0 if op.same else 2)


def padded_kernels(p: spec.Plan, params: Params) -> Params:
    return padded_at_the_end(params)


def symmetric_plan(op: Any) -> Any:
    if isinstance(op, spec.ConvUnit):
        return dataclasses.replace(op, same=False, padding=op.kernel // 2)
    return dataclasses.replace(op, same=False, padding=(op.kernel - 1) // 2)


def same_op(op: Any) -> bool:
    return isinstance(op, (spec.ConvUnit, spec.Pool)) and op.same


def relu(present: bool) -> Callable[[spec.Plan], spec.Plan]:
    return ops_where(
        lambda op: isinstance(op, spec.ConvUnit) and op.relu != present,
        lambda op: dataclasses.replace(op, relu=present),
    )


def middle_branches_swapped(p: spec.Plan) -> spec.Plan:
    """Every block concatenating branch 3 before branch 2: the paper's 1x1 | 3x3 | 5x5 |
    pool written in the order of Liu's lecture (1x1 | 5x5 | 3x3 | pool), or the reverse."""

    def swap(s: spec.Stage) -> spec.Stage:
        if not isinstance(s, spec.InceptionUnit):
            return s
        b = s.branches
        return dataclasses.replace(s, branches=(b[0], b[2], b[1], *b[3:]))

    return dataclasses.replace(p, stages=tuple(map(swap, p.stages)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the classes, in float32 as a model computes it."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted, dtype=np.float32)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def count_flipped(op: Any) -> Any:
    return dataclasses.replace(op, count_include_pad=not op.count_include_pad)
