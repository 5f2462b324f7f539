"""Where each porting mistake shows, from the spec alone: the first stage (inference) or
the quantity (training) a mistake changes in a plan at an input size, None where it
changes nothing at that size, or :class:`NotApplicable` saying why it cannot be made in
that plan. Each pitfall of the catalogue (:mod:`.pitfalls`) names one of these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import spec


class NotApplicable(Exception):
    """The mistake cannot be made in this network (the message says why)."""


def stage_inputs(p: spec.Plan, size: int) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) entering every stage at this input size."""
    outs = spec.stage_shapes(p, size)
    chw = (p.in_channels, size, size)
    inputs = {}
    for stage in p.stages:
        inputs[stage.name] = chw
        chw = outs[stage.name]
    return inputs


def stage_ops(stage: spec.Stage) -> list[spec.Stage]:
    """The stage itself, or the ops inside a block."""
    if isinstance(stage, spec.InceptionUnit):
        return [op for branch in stage.branches for op in branch]
    if isinstance(stage, spec.ResidualUnit):
        return [stage.conv1, stage.conv2]
    return [stage]


def first_stage(p: spec.Plan, hit: Callable[[spec.Stage], bool], none: str) -> str:
    """The first stage holding an op ``hit`` selects; NotApplicable(``none``) if none does."""
    for stage in p.stages:
        if any(hit(op) for op in stage_ops(stage)):
            return stage.name
    raise NotApplicable(none)


def _first_input_stage(p: spec.Plan, size: int) -> str:
    return p.stages[0].name  # an input mistake shows in the first stage's output


def same_targets(op: spec.Stage) -> bool:
    """What a port writes as ``padding="same"``: the strided padded convs, the 3x3/2 max pools."""
    if isinstance(op, spec.ConvUnit):
        return op.stride > 1 and op.padding > 0
    return isinstance(op, spec.Pool) and op.kind == "max" and (op.kernel, op.stride) == (3, 2)


def same_differs(op: spec.ConvUnit | spec.Pool, n: int) -> bool:
    """Whether TensorFlow's "same" (out = ceil(n / stride), the odd pixel of padding at
    the end) gives other windows than the spec's symmetric padding on an n-pixel side."""
    out = -(-n // op.stride)
    before = max((out - 1) * op.stride + op.kernel - n, 0) // 2
    if isinstance(op, spec.ConvUnit):
        ours = spec.conv_out(n, op.kernel, op.stride, op.padding)
    else:
        ours = spec.pool_out(n, op.kernel, op.stride, op.padding, op.ceil_mode)
    return out != ours or before != op.padding


def where_same(p: spec.Plan, size: int) -> str | None:
    first_stage(p, same_targets, "no strided padded conv and no 3x3/2 max pool")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        hit = isinstance(stage, (spec.ConvUnit, spec.Pool)) and same_targets(stage)
        if hit and same_differs(stage, inputs[stage.name][1]):  # type: ignore[arg-type]
            return stage.name
    return None


def _ceil_pool(op: spec.Stage) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "max" and op.ceil_mode and op.stride > 1


def floor_differs(op: spec.Pool, n: int) -> bool:
    return spec.pool_out(n, op.kernel, op.stride, op.padding, True) != spec.pool_out(
        n, op.kernel, op.stride, op.padding, False
    )


def where_floor(p: spec.Plan, size: int) -> str | None:
    first_stage(p, _ceil_pool, "its max pools already round down")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        if isinstance(stage, spec.Pool) and _ceil_pool(stage) and floor_differs(stage, inputs[stage.name][1]):
            return stage.name
    return None


def where_kernel(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, lambda op: isinstance(op, spec.ConvUnit) and op.kernel > 1, "no conv wider than 1x1")


def flattened(d: spec.Dense) -> bool:
    return d.flattened_from is not None and d.flattened_from[1] * d.flattened_from[2] > 1


def where_dense(p: spec.Plan, size: int) -> str | None:
    aux = [h for h in p.aux if flattened(h.fc1)]
    if not aux and not flattened(p.fc):
        raise NotApplicable("no dense layer reads a flattened map larger than 1 x 1")
    if aux and spec.aux_admits(p, size):
        return aux[0].name  # aux1: its output follows its tap in stage order
    return "logits" if flattened(p.fc) else None


def where_eps(default: float) -> Callable[[spec.Plan, int], str | None]:
    def where(p: spec.Plan, size: int) -> str | None:
        norm = p.variant.convs.norm
        if norm is None:
            raise NotApplicable("no BatchNorm")
        if norm.eps == default:
            raise NotApplicable(f"its BatchNorm epsilon already is {default:g}")
        return first_stage(p, lambda op: variant_eps(op, norm.eps), "no conv with BatchNorm")

    return where


def variant_eps(op: spec.Stage, eps: float) -> bool:
    """A conv unit whose BatchNorm has the variant's epsilon: what a port writing the
    layer without ``epsilon=`` gets wrong (a per-layer exception, as pytorch-cifar100's
    ``nn.BatchNorm2d(n5x5, n5x5)``, is ported as such)."""
    return isinstance(op, spec.ConvUnit) and op.norm is not None and op.norm.eps == eps


def needs_bn(quantity: str) -> Callable[[spec.Plan, int], str | None]:
    def where(p: spec.Plan, size: int) -> str | None:
        if p.variant.convs.norm is None:
            raise NotApplicable("no BatchNorm")
        return quantity

    return where


def where_lrn(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, lambda op: isinstance(op, spec.LRN), "no LocalResponseNorm")


def where_transform(p: spec.Plan, size: int) -> str | None:
    if p.transform is None:
        raise NotApplicable("no input transform (googlenet_bn and googlenet_lrn have transform_input)")
    return _first_input_stage(p, size)


def where_bgr(p: spec.Plan, size: int) -> str | None:
    if p.in_channels != 3:
        raise NotApplicable(f"{p.in_channels} input channel(s): no colour order")
    return _first_input_stage(p, size)


def where_aux_weight(p: spec.Plan, size: int) -> str | None:
    if not p.aux:
        raise NotApplicable("no aux heads")
    return "loss"


def branch3_3x3(op: spec.Stage) -> bool:
    """Branch 3's wide conv, 3x3 where the paper has 5x5 (TF-slim's ``Branch_2/Conv2d_0b_3x3``)."""
    return isinstance(op, spec.ConvUnit) and ".branch3." in op.name and op.kernel == 3


def where_5x5(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, branch3_3x3, "its branch 3 has no 3x3 conv (the paper's 5x5 is one)")


def _strided_same(op: spec.Stage) -> bool:
    return isinstance(op, (spec.ConvUnit, spec.Pool)) and op.same and op.stride > 1


def symmetric_differs(op: spec.ConvUnit | spec.Pool, n: int) -> bool:
    """Whether TensorFlow's SAME pads an n-pixel side otherwise than (k - 1) // 2 on both."""
    half = (op.kernel - 1) // 2
    return spec.same_pads(n, op.kernel, op.stride) != (half, half)


def where_symmetric(p: spec.Plan, size: int) -> str | None:
    first_stage(p, _strided_same, "no strided op with TensorFlow's SAME padding")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        if _strided_same(stage) and symmetric_differs(stage, inputs[stage.name][1]):  # type: ignore[arg-type]
            return stage.name
    return None


def where_gamma(p: spec.Plan, size: int) -> str | None:
    norm = p.variant.convs.norm
    if norm is None or norm.scale:
        raise NotApplicable("its BatchNorm has a scale")
    return "loss"


def where_relu(present: bool) -> Callable[[spec.Plan, int], str | None]:
    none = "no conv unit has a ReLU of its own (its ReLUs are stages)" if present else "every conv has its ReLU already"
    return lambda p, size: first_stage(p, lambda op: isinstance(op, spec.ConvUnit) and op.relu == present, none)


def where_blocks(p: spec.Plan, size: int) -> str | None:
    for stage in p.stages:
        if isinstance(stage, spec.InceptionUnit):
            return stage.name
    raise NotApplicable("no Inception block")


def padded_avg(op: Any) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "avg" and op.padding > 0


def where_padded_avg(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, padded_avg, "no average pool with padding")


def where_dropout(p: spec.Plan, size: int) -> str | None:
    if p.dropout == 0:
        raise NotApplicable("no dropout before the classifier")
    return "logits"


def signed_out(op: spec.Stage, signed: bool) -> bool:
    """Whether an op's output can be negative, given whether its input can: a ReLU (a
    conv unit's own, a ReLU stage, a residual block's last) makes it nonnegative; pools
    and LRN keep the sign; a block is signed if any branch's output is."""
    if isinstance(op, spec.ConvUnit):
        return not op.relu
    if isinstance(op, (spec.ReLU, spec.ResidualUnit)):
        return False
    if isinstance(op, spec.InceptionUnit):
        return any(_chain_signed(branch, signed)[1] for branch in op.branches)
    return signed


def max_pool_pads(op: spec.Pool, n: int) -> tuple[int, int]:
    """(before, after) padding a max pool reads on an n-pixel side: its own, the end the
    ceil mode reaches past the map, or TensorFlow's SAME."""
    if op.same:
        return spec.same_pads(n, op.kernel, op.stride)
    out = spec.pool_out(n, op.kernel, op.stride, op.padding, op.ceil_mode)
    return op.padding, max(0, (out - 1) * op.stride + op.kernel - n - op.padding)


def _zero_wins(op: Any, n: int, signed: bool) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "max" and signed and max_pool_pads(op, n) != (0, 0)


def _chain_signed(ops: Any, signed: bool, n: int = 0) -> tuple[bool, bool]:
    """(a padded max pool of the chain reads a signed map, the chain's output is signed)."""
    hit = False
    for op in ops:
        hit = hit or (n > 0 and _zero_wins(op, n, signed))
        signed = signed_out(op, signed)
    return hit, signed


def where_zero_pad(p: spec.Plan, size: int) -> str | None:
    """The first stage where a max pool padded with zeros instead of -inf reads padding
    beside a map that can be negative, and hands it on unrectified (``relu(max_pool(x))``
    is the same with either padding): None where every padded max pool reads a ReLU's
    output, which no zero can beat."""
    pools = [op for s in p.stages for op in stage_ops(s) if isinstance(op, spec.Pool) and op.kind == "max"]
    if not any(op.padding or op.ceil_mode or op.same for op in pools):
        raise NotApplicable("its max pools have no padding and round down: no window reaches past the map")
    inputs = stage_inputs(p, size)
    signed = True  # the input image
    for i, stage in enumerate(p.stages):
        n = inputs[stage.name][1]
        if isinstance(stage, spec.InceptionUnit):  # its branch pool reads the block's input, a conv the pool
            hit = any(_chain_signed(branch, signed, n)[0] for branch in stage.branches)
        else:
            rectified = i + 1 < len(p.stages) and isinstance(p.stages[i + 1], spec.ReLU)
            hit = _zero_wins(stage, n, signed) and not rectified
        if hit:
            return stage.name
        signed = signed_out(stage, signed)
    return None


def counts_padding(op: Any) -> bool:
    """An average pool whose mean counts its zero padding (PyTorch's ``count_include_pad``)."""
    return isinstance(op, spec.Pool) and op.kind == "avg" and op.padding > 0 and op.count_include_pad


def where_counted_padding(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, counts_padding, "no average pool counts padding in its mean")


def where_first_conv(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, lambda op: isinstance(op, spec.ConvUnit), "no conv")
