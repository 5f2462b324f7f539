"""The arithmetic of a plan: output sizes, every stage's shape at any input size, the
sizes a variant admits, parameter counts and multiply-adds. Plain Python."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .rows import LRN, AdaptiveAvgPool, Pool, ReLU
from .units import ConvUnit, Dense, InceptionUnit, Plan, ResidualUnit, SpecError, Stage

HW = tuple[int, int]
CHW = tuple[int, int, int]


def conv_out(size: int, kernel: int, stride: int, padding: int, same: bool = False) -> int:
    """PyTorch's conv output size; with TensorFlow's SAME padding, ceil(size / stride)."""
    if same:
        return -(-size // stride)
    return (size + 2 * padding - kernel) // stride + 1


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis, (before, after): enough for
    ceil(size / stride) windows, the odd cell after. At stride 2 it depends on the size:
    a 7x7/2 conv pads (2, 3) on 224 and (3, 3) on 223; a 3x3/2 pool (0, 1) and (1, 1)
    (``tf.nn.conv2d``'s documented rule, https://www.tensorflow.org/api_docs/python/tf/nn#notes_on_padding_2)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pool_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool, same: bool = False) -> int:
    """PyTorch's pooling output size (``ceil_mode`` drops a last window that would
    start in the right padding); with TensorFlow's SAME padding, ceil(size / stride)."""
    if same:
        return -(-size // stride)
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def op_chw(op: Stage, chw: CHW) -> CHW:
    """The (C, H, W) an op or stage gives from ``chw``."""
    c, h, w = chw
    if isinstance(op, ConvUnit):
        return (
            op.out_channels,
            conv_out(h, op.kernel, op.stride, op.padding, op.same),
            conv_out(w, op.kernel, op.stride, op.padding, op.same),
        )
    if isinstance(op, Pool):
        return (
            c,
            pool_out(h, op.kernel, op.stride, op.padding, op.ceil_mode, op.same),
            pool_out(w, op.kernel, op.stride, op.padding, op.ceil_mode, op.same),
        )
    if isinstance(op, AdaptiveAvgPool):
        return (c, op.size, op.size)
    if isinstance(op, (LRN, ReLU)):
        return chw
    return (op.out_channels, h, w)  # Inception and residual blocks keep the spatial size


def window_fits(op: Stage, chw: CHW) -> bool:
    """Whether a pool's window fits its padded input. PyTorch runs a ceil-mode window
    larger than the input; MXNet refuses, so the spec admits neither. A SAME window
    always fits: TensorFlow pads up to it."""
    if not isinstance(op, Pool) or op.same:
        return True
    return all(op.kernel <= s + 2 * op.padding for s in chw[1:])


def input_hw(size: int | Sequence[int]) -> HW:
    """(height, width) from a size or a pair; SpecError otherwise."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in hw):
        raise SpecError(f"input size: expected a positive int or (height, width), got {size!r}")
    return hw[0], hw[1]


def trace(stages: Sequence[Stage], chw: CHW, out: dict[str, CHW] | None = None) -> CHW:
    """The (C, H, W) after the stages (each recorded in ``out``); SpecError if the input
    is too small for them."""
    size = f"{chw[1]} x {chw[2]}" if chw[1] != chw[2] else chw[1]
    for stage in stages:
        if not window_fits(stage, chw):
            assert isinstance(stage, Pool)
            raise SpecError(
                f"input size {size}: the {stage.name} window ({stage.kernel} x {stage.kernel}) "
                f"is larger than its {chw[1]} x {chw[2]} input; use a larger --input-size"
            )
        chw = op_chw(stage, chw)
        if min(chw[1:]) < 1:
            raise SpecError(
                f"input size {size}: nothing left after {stage.name} ({chw[1]} x {chw[2]}); use a larger --input-size"
            )
        if out is not None:
            out[stage.name] = chw
    return chw


def _shapes(plan: Plan, hw: HW) -> dict[str, CHW]:
    out: dict[str, CHW] = {}
    chw = trace(plan.stages, (plan.in_channels, *hw), out)
    if plan.head_pool is None:
        if chw != plan.fc.flattened_from:
            assert plan.fc.flattened_from is not None
            raise SpecError(
                f"input size {_text(hw)}: the last map is {' x '.join(map(str, chw))}; {plan.fc.name} reads "
                f"{' x '.join(map(str, plan.fc.flattened_from))} flattened, so use --input-size {plan.input_size}"
            )
        return out
    if not window_fits(plan.head_pool, chw):
        assert isinstance(plan.head_pool, Pool)
        raise SpecError(
            f"input size {_text(hw)}: the head pool's {plan.head_pool.kernel} x {plan.head_pool.kernel} window "
            f"is larger than the {chw[1]} x {chw[2]} map; fc expects 1 x 1"
        )
    pooled = op_chw(plan.head_pool, chw)
    if pooled[1:] != (1, 1):
        raise SpecError(
            f"input size {_text(hw)}: the head pool turns the {chw[1]} x {chw[2]} map into "
            f"{pooled[1]} x {pooled[2]}; fc expects 1 x 1"
        )
    return out


def _text(hw: HW) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]} x {hw[1]}"


def stage_shapes(plan: Plan, size: int | Sequence[int]) -> dict[str, CHW]:
    """(C, H, W) after every stage; SpecError if the input is too small for the network,
    or gives the map a flattening fc cannot read. The error says which sizes run."""
    hw = input_hw(size)
    try:
        return _shapes(plan, hw)
    except SpecError as e:
        raise SpecError(f"{e} ({plan.variant.name} runs at {admitted_text(plan)})") from None


SIZE_LIMIT = 1024  # the largest square input the admitted ranges are searched up to


@lru_cache(maxsize=64)
def admitted(plan: Plan, limit: int = SIZE_LIMIT) -> tuple[tuple[int, int], ...]:
    """The square input sizes the plan runs, as inclusive (first, last) ranges up to ``limit``."""
    ok = []
    for s in range(1, limit + 1):
        try:
            _shapes(plan, (s, s))
        except SpecError:
            continue
        ok.append(s)
    ranges: list[tuple[int, int]] = []
    for s in ok:
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return tuple(ranges)


def admitted_text(plan: Plan) -> str:
    """``223-446``, ``47 and up`` or ``28-31``: where the plan runs, in words."""
    parts = [f"{a} and up" if b == SIZE_LIMIT else (f"{a}" if a == b else f"{a}-{b}") for a, b in admitted(plan)]
    return ", ".join(parts) or "no square size"


def aux_admits(plan: Plan, size: int | Sequence[int]) -> bool:
    """Whether the aux heads can run at this input size: their pool must give the
    ``pooled x pooled`` map that fc1's weights expect (avg 5x5/3 needs a 14-16 map)."""
    if not plan.aux:
        return False
    shapes = stage_shapes(plan, size)
    return all(
        window_fits(a.pool, shapes[a.tap]) and op_chw(a.pool, shapes[a.tap])[1:] == (a.pooled, a.pooled)
        for a in plan.aux
    )


def expected_shapes(plan: Plan, size: int | Sequence[int], batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Output shape of every stage (NCHW), then ``flatten`` (the features fc reads),
    ``logits`` and, where the size admits them, the aux logits."""
    shapes: dict[str, tuple[int, ...]] = {name: (batch, *chw) for name, chw in stage_shapes(plan, size).items()}
    shapes["flatten"] = (batch, plan.fc.in_features)
    shapes["logits"] = (batch, plan.num_classes)
    if aux_admits(plan, size):
        shapes.update({head.name: (batch, plan.num_classes) for head in plan.aux})
    return shapes


@dataclass(frozen=True)
class LayerCount:
    """One parametrised layer: canonical name, trainable parameters, BatchNorm
    statistics (running mean + variance) and multiply-adds at a given input size."""

    name: str
    params: int
    stats: int
    macs: int


def conv_params(unit: ConvUnit) -> tuple[int, int]:
    """(trainable, statistics): the kernel, the bias if any, BatchNorm's scale (if any) and shift, its statistics."""
    kernel = unit.out_channels * unit.in_channels * unit.kernel * unit.kernel + (unit.out_channels if unit.bias else 0)
    if unit.norm is None:
        return kernel, 0
    return kernel + (2 if unit.norm.scale else 1) * unit.out_channels, 2 * unit.out_channels


def dense_params(dense: Dense) -> tuple[int, int]:
    return dense.in_features * dense.out_features + dense.out_features, 0


def layer_counts(plan: Plan, size: int | Sequence[int] = 224) -> list[LayerCount]:
    """Per conv unit and dense layer, in forward order. Pools, ReLU and BatchNorm's
    element-wise work are not counted as multiply-adds (the usual convention)."""
    shapes = stage_shapes(plan, size)
    admitted_aux = aux_admits(plan, size)
    rows: list[LayerCount] = []

    def conv_row(unit: ConvUnit, in_hw: HW) -> HW:
        h, w = (conv_out(s, unit.kernel, unit.stride, unit.padding, unit.same) for s in in_hw)
        params, stats = conv_params(unit)
        rows.append(
            LayerCount(
                unit.name, params, stats, h * w * unit.out_channels * unit.in_channels * unit.kernel * unit.kernel
            )
        )
        return h, w

    def dense_row(dense: Dense, active: bool = True) -> None:
        rows.append(
            LayerCount(dense.name, *dense_params(dense), dense.in_features * dense.out_features if active else 0)
        )

    hw = input_hw(size)
    for stage in plan.stages:
        if isinstance(stage, ConvUnit):
            conv_row(stage, hw)
        elif isinstance(stage, InceptionUnit):
            for branch in stage.branches:
                bhw = hw
                for op in branch:
                    bhw = conv_row(op, bhw) if isinstance(op, ConvUnit) else op_chw(op, (0, *bhw))[1:]
        elif isinstance(stage, ResidualUnit):
            conv_row(stage.conv2, conv_row(stage.conv1, hw))
        hw = shapes[stage.name][1:]
        for head in plan.aux_for(stage.name):
            conv_row(head.conv, (head.pooled, head.pooled))
            if not admitted_aux:  # the aux heads do not run at this size
                rows[-1] = dataclasses.replace(rows[-1], macs=0)
            dense_row(head.fc1, admitted_aux)
            dense_row(head.fc2, admitted_aux)
    dense_row(plan.fc)
    return rows


def count_params(plan: Plan) -> tuple[int, int]:
    """(trainable parameters, BatchNorm statistics) of the whole plan."""
    counts = [conv_params(u) if isinstance(u, ConvUnit) else dense_params(u) for u in plan.units()]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)
