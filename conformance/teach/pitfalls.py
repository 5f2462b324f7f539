"""The pitfalls: porting mistakes, each one small function that breaks a correct port.

Every mistake is defined once, here; ``python -m conformance pitfalls`` measures
what it does, and the negative-control tests (``tests/test_negative_controls.py``,
``tests/test_training.py``) use the same definitions to show that ``check`` fails on
it. A :class:`Pitfall` is data (what, where, why) plus ``broken(backend)``: a context
manager giving the backend with the mistake made, the way a real port makes it (a
patched build, a weight adapter monkeypatched for the duration, a swapped input).
An inference mistake also has a :class:`Replay`: the same mistake stated as a change
to the plan, the canonical weights, the input or the logits, which the reference
(PyTorch) runs; ``verify``'s diagnosis (``conformance.verify.diagnose``) replays the
catalogue that way with a user's weights, and the mistakes hand-written PyTorch ports
make are made from their replay (:func:`replayed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from unittest import mock

import numpy as np

from .. import interface, spec
from ..interface import Backend

Broken = Callable[[Backend], contextlib.AbstractContextManager[Backend]]
Params = dict[str, np.ndarray]

# The framework defaults a port inherits when it does not pass a value.
GLUON_BN_EPS = 1e-5  # mxnet.gluon.nn.BatchNorm(epsilon=1e-5)
KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization(epsilon=1e-3)


class NotApplicable(Exception):
    """The mistake cannot be made in this network (the message says why)."""


@dataclass(frozen=True)
class Pitfall:
    name: str  # the command-line name
    title: str  # the mistake, in one line
    kind: Literal["inference", "training"]
    framework: str  # the framework whose port makes the mistake
    variants: tuple[str, ...]  # where it is shown by default
    row: str | None  # the row ("what") of the docs' "Where the three frameworks differ", if any
    why: str  # one sentence
    # The stage (inference) or quantity (training) where the mistake is made in this plan
    # at this input size; None: it changes nothing at this size. NotApplicable: it cannot
    # be made in this plan.
    where: Callable[[spec.Plan, int], str | None]
    broken: Broken
    # The mistake as the reference makes it, for verify's diagnosis; None for training
    # mistakes and for dropout-on (random: no run reproduces another's masks).
    replay: Replay | None = None


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


def patched(b: Backend, **overrides: Any) -> types.SimpleNamespace:
    """A backend with some functions replaced."""
    return types.SimpleNamespace(**{**{f: getattr(b, f) for f in interface.FUNCTIONS}, **overrides})


def rebuilt(b: Backend, change: Callable[[Any], None]) -> types.SimpleNamespace:
    """``b`` whose ``build`` applies ``change`` to every model it builds."""

    def build(variant: Any, *args: Any, **options: Any) -> Any:
        model = b.build(variant, *args, **options)
        change(model)
        return model

    return patched(b, build=build)


@contextlib.contextmanager
def _just(b: Backend) -> Iterator[Backend]:
    yield b


def _returning(make: Callable[[Backend], Backend]) -> Broken:
    """A ``broken`` for mistakes that need nothing undone afterwards."""
    return lambda b: _just(make(b))


# --------------------------------------------------------------------------------------
# Where a mistake shows, from the spec alone
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Keras "same" padding
# --------------------------------------------------------------------------------------


def _same_targets(op: spec.Stage) -> bool:
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


def _where_same(p: spec.Plan, size: int) -> str | None:
    first_stage(p, _same_targets, "no strided padded conv and no 3x3/2 max pool")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        hit = isinstance(stage, (spec.ConvUnit, spec.Pool)) and _same_targets(stage)
        if hit and same_differs(stage, inputs[stage.name][1]):  # type: ignore[arg-type]
            return stage.name
    return None


def _same_max_pool(x: Any) -> Any:
    from keras import ops

    return ops.max_pool(x, 3, 2, padding="same")


def _keras_same(model: Any) -> None:
    from impl_keras.engine import walk
    from impl_keras.layers import BasicConv2d, Pool2D

    for layer in list(walk(model)):
        if isinstance(layer, BasicConv2d) and _same_targets(layer.unit):
            layer.pad = None
            layer.conv.padding = "same"
        elif isinstance(layer, Pool2D) and _same_targets(layer.pool):
            layer.call = _same_max_pool  # type: ignore[method-assign]  # this instance only


# --------------------------------------------------------------------------------------
# Floor instead of ceil rounding in the max pools
# --------------------------------------------------------------------------------------


def _ceil_pool(op: spec.Stage) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "max" and op.ceil_mode and op.stride > 1


def floor_differs(op: spec.Pool, n: int) -> bool:
    return spec.pool_out(n, op.kernel, op.stride, op.padding, True) != spec.pool_out(
        n, op.kernel, op.stride, op.padding, False
    )


def _where_floor(p: spec.Plan, size: int) -> str | None:
    first_stage(p, _ceil_pool, "its max pools already round down")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        if isinstance(stage, spec.Pool) and _ceil_pool(stage) and floor_differs(stage, inputs[stage.name][1]):
            return stage.name
    return None


def _mxnet_floor(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    def floor(block: Any) -> None:
        if isinstance(block, nn.MaxPool2D):
            options(block)["pooling_convention"] = "valid"  # MXNet's default: round down

    model.apply(floor)


# --------------------------------------------------------------------------------------
# Weight layouts
# --------------------------------------------------------------------------------------


def _where_kernel(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, lambda op: isinstance(op, spec.ConvUnit) and op.kernel > 1, "no conv wider than 1x1")


@contextlib.contextmanager
def _keras_kernel_transposed(b: Backend) -> Iterator[Backend]:
    import impl_keras.weights

    # OIHW -> HWIO must be transpose(2, 3, 1, 0); (3, 2, 1, 0) swaps the kernel's height
    # and width, which a square kernel's shape cannot show.
    with mock.patch.object(impl_keras.weights, "oihw_to_hwio", lambda w: w.transpose(3, 2, 1, 0)):
        yield b


def _flattened(d: spec.Dense) -> bool:
    return d.flattened_from is not None and d.flattened_from[1] * d.flattened_from[2] > 1


def _where_dense(p: spec.Plan, size: int) -> str | None:
    aux = [h for h in p.aux if _flattened(h.fc1)]
    if not aux and not _flattened(p.fc):
        raise NotApplicable("no dense layer reads a flattened map larger than 1 x 1")
    if aux and spec.aux_admits(p, size):
        return aux[0].name  # aux1: its output follows its tap in stage order
    return "logits" if _flattened(p.fc) else None


@contextlib.contextmanager
def _keras_dense_unpermuted(b: Backend) -> Iterator[Backend]:
    import impl_keras.weights

    # (out, in) -> (in, out) only: the rows stay in PyTorch's (C, H, W) order
    with mock.patch.object(impl_keras.weights, "dense_to_keras", lambda d: lambda w: w.T):
        yield b


# --------------------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------------------


def _where_eps(default: float) -> Callable[[spec.Plan, int], str | None]:
    def where(p: spec.Plan, size: int) -> str | None:
        norm = p.variant.convs.norm
        if norm is None:
            raise NotApplicable("no BatchNorm")
        if norm.eps == default:
            raise NotApplicable(f"its BatchNorm epsilon already is {default:g}")
        return first_stage(p, lambda op: _variant_eps(op, norm.eps), "no conv with BatchNorm")

    return where


def _variant_eps(op: spec.Stage, eps: float) -> bool:
    """A conv unit whose BatchNorm has the variant's epsilon: what a port writing the
    layer without ``epsilon=`` gets wrong (a per-layer exception, as pytorch-cifar100's
    ``nn.BatchNorm2d(n5x5, n5x5)``, is ported as such)."""
    return isinstance(op, spec.ConvUnit) and op.norm is not None and op.norm.eps == eps


def _mxnet_default_eps(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    eps = model.plan.variant.convs.norm.eps

    def default(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["eps"] == eps:
            options(block)["eps"] = GLUON_BN_EPS

    model.apply(default)


def _keras_default_eps(model: Any) -> None:
    from keras import layers

    from impl_keras.engine import walk

    eps = model.plan.variant.convs.norm.eps
    for layer in walk(model):
        if isinstance(layer, layers.BatchNormalization) and layer.epsilon == eps:
            layer.epsilon = KERAS_BN_EPS


def _needs_bn(quantity: str) -> Callable[[spec.Plan, int], str | None]:
    def where(p: spec.Plan, size: int) -> str | None:
        if p.variant.convs.norm is None:
            raise NotApplicable("no BatchNorm")
        return quantity

    return where


def _mxnet_untranslated_momentum(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    # PyTorch's 0.1 (the weight of the new batch) passed as Gluon's momentum (the weight of the old)
    model.apply(lambda b: options(b).__setitem__("momentum", 0.1) if isinstance(b, nn.BatchNorm) else None)


@contextlib.contextmanager
def _keras_stock_batchnorm(b: Backend) -> Iterator[Backend]:
    """Keras's own BatchNormalization update: the biased batch variance into the moving one."""
    from keras import layers, ops

    import impl_keras.layers

    def stock_call(self: Any, x: Any, training: Any = None, mask: Any = None) -> Any:
        if training and self.record:
            self.batch_stats = ops.moments(x, axes=[0, 1, 2])
        return layers.BatchNormalization.call(self, x, training=training, mask=mask)

    with mock.patch.object(impl_keras.layers.BatchNorm, "call", stock_call):
        yield b


# --------------------------------------------------------------------------------------
# LRN, the input, training
# --------------------------------------------------------------------------------------


def _where_lrn(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, lambda op: isinstance(op, spec.LRN), "no LocalResponseNorm")


def _keras_tf_alpha(model: Any) -> None:
    from impl_keras.engine import walk
    from impl_keras.layers import LocalResponseNorm

    for layer in walk(model):
        if isinstance(layer, LocalResponseNorm):
            layer.scale = layer.lrn.alpha  # TensorFlow's per-element weight, not alpha / size


def _where_transform(p: spec.Plan, size: int) -> str | None:
    if p.transform is None:
        raise NotApplicable("no input transform (googlenet_bn and googlenet_lrn have transform_input)")
    return _first_input_stage(p, size)


def _without_transform(b: Backend) -> Backend:
    def build(variant: Any, *args: Any, **options: Any) -> Any:
        return b.build(variant, *args, **{**options, "transform_input": False})

    return patched(b, build=build)


def _where_bgr(p: spec.Plan, size: int) -> str | None:
    if p.in_channels != 3:
        raise NotApplicable(f"{p.in_channels} input channel(s): no colour order")
    return _first_input_stage(p, size)


def _rgb_for_bgr(b: Backend) -> Backend:
    def swap(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, ::-1])

    return patched(
        b,
        stages=lambda model, x: b.stages(model, swap(x)),
        forward=lambda model, x, *a, **k: b.forward(model, swap(x), *a, **k),
    )


def _where_aux_weight(p: spec.Plan, size: int) -> str | None:
    if not p.aux:
        raise NotApplicable("no aux heads")
    return "loss"


def _mxnet_aux_weight_one(b: Backend) -> Backend:
    def trainer(model: Any, lr: float, momentum: float, **kw: Any) -> Any:
        return b.Trainer(model, lr=lr, momentum=momentum, **{**kw, "aux_weight": 1.0})

    return patched(b, Trainer=trainer)


def _keras_sgd_one_minus(b: Backend) -> Backend:
    def trainer(model: Any, lr: float, momentum: float, **kw: Any) -> Any:
        return b.Trainer(model, lr=lr, momentum=1.0 - momentum, **kw)

    return patched(b, Trainer=trainer)


# --------------------------------------------------------------------------------------
# TF-slim's inception_v1: what its names do not say
# --------------------------------------------------------------------------------------


def _branch3_3x3(op: spec.Stage) -> bool:
    """Branch 3's wide conv, 3x3 where the paper has 5x5 (TF-slim's ``Branch_2/Conv2d_0b_3x3``)."""
    return isinstance(op, spec.ConvUnit) and ".branch3." in op.name and op.kernel == 3


def _where_5x5(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, _branch3_3x3, "its branch 3 has no 3x3 conv (the paper's 5x5 is one)")


Convert = Callable[[Any], dict[str, np.ndarray]]


def as_variant(
    b: Backend, change: Callable[[spec.Variant], spec.Variant], load: Convert | None = None, save: Convert | None = None
) -> Backend:
    """``b`` building every model from ``change(variant)``: the mistake is in the network's
    plan, so it survives whatever rebuilds a model from its plan (PyTorch's channels-last
    copy); ``load`` and ``save``: what the port does to the canonical weights on the way
    in and out."""

    def build(variant: Any, *args: Any, **options: Any) -> Any:
        return b.build(change(spec.variant(variant)), *args, **options)

    def from_canonical(model: Any, params: Any) -> None:
        b.from_canonical(model, params if load is None else load(params))

    def to_canonical(model: Any) -> dict[str, np.ndarray]:
        params = b.to_canonical(model)
        return params if save is None else save(params)

    return patched(b, build=build, from_canonical=from_canonical, to_canonical=to_canonical)


def _paper_5x5(v: spec.Variant) -> spec.Variant:
    return dataclasses.replace(v, branch3=dataclasses.replace(v.branch3, kernel=5))


def _padded_at_the_end(params: Any) -> dict[str, np.ndarray]:
    """The 3x3 kernels of branch 3 zero-filled to 5x5 at the end, as
    ``np.pad(w, ((0, 0), (0, 0), (0, 2), (0, 2)))`` does: every window moves a pixel."""
    wide = (".branch3.1.conv.weight",)
    return {
        k: np.pad(w, ((0, 0), (0, 0), (0, 2), (0, 2))) if k.endswith(wide) and w.shape[-1] == 3 else w
        for k, w in params.items()
    }


def _cropped_back(params: Any) -> dict[str, np.ndarray]:
    """The 5x5 kernels written back as the checkpoint's 3x3 (the corner they were loaded into)."""
    return {k: w[..., :3, :3].copy() if k.endswith(".branch3.1.conv.weight") else w for k, w in params.items()}


def _strided_same(op: spec.Stage) -> bool:
    return isinstance(op, (spec.ConvUnit, spec.Pool)) and op.same and op.stride > 1


def symmetric_differs(op: spec.ConvUnit | spec.Pool, n: int) -> bool:
    """Whether TensorFlow's SAME pads an n-pixel side otherwise than (k - 1) // 2 on both."""
    half = (op.kernel - 1) // 2
    return spec.same_pads(n, op.kernel, op.stride) != (half, half)


def _where_symmetric(p: spec.Plan, size: int) -> str | None:
    first_stage(p, _strided_same, "no strided op with TensorFlow's SAME padding")
    inputs = stage_inputs(p, size)
    for stage in p.stages:
        if _strided_same(stage) and symmetric_differs(stage, inputs[stage.name][1]):  # type: ignore[arg-type]
            return stage.name
    return None


def _symmetric(v: spec.Variant) -> spec.Variant:
    """PyTorch's padding=k // 2 where TF-slim pads SAME (torchvision's padding=3 on the
    7x7/2 conv, 1 on the 3x3 pools, none on the 2x2 one), rounding down."""

    def pool(p: spec.Pool) -> spec.Pool:
        return dataclasses.replace(p, same=False, padding=(p.kernel - 1) // 2) if p.same else p

    def row(r: spec.Row) -> spec.Row:
        if isinstance(r, spec.Conv):
            return dataclasses.replace(r, padding=r.kernel // 2)
        return pool(r) if isinstance(r, spec.Pool) else r

    rows = tuple(map(row, v.rows))
    return dataclasses.replace(
        v, rows=rows, convs=dataclasses.replace(v.convs, same=False), branch_pool=pool(v.branch_pool)
    )


def _where_gamma(p: spec.Plan, size: int) -> str | None:
    norm = p.variant.convs.norm
    if norm is None or norm.scale:
        raise NotApplicable("its BatchNorm has a scale")
    return "loss"


def _mxnet_gamma(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import make_trainable, options

    def scaled(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["fix_gamma"]:
            options(block)["fix_gamma"] = False  # Gluon's default scale=True: a gamma (of ones) that trains
            make_trainable(block.gamma)

    model.apply(scaled)


# --------------------------------------------------------------------------------------
# Replays: each inference mistake as a change the reference can run
# --------------------------------------------------------------------------------------

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


def _ops_where(hit: Callable[[Any], bool], change: OpChange) -> Callable[[spec.Plan], spec.Plan]:
    return lambda p: map_ops(p, lambda op: change(op) if hit(op) else op)


def conv_weight(u: spec.ConvUnit) -> str:
    """The canonical key of a conv unit's kernel."""
    return f"{u.name}.weight" if u.plain else f"{u.name}.conv.weight"


def _same_plan(op: Any) -> Any:
    """Keras's "same": TensorFlow's SAME padding, the 3x3/2 max pools without ceil rounding."""
    if isinstance(op, spec.ConvUnit):
        return dataclasses.replace(op, same=True, padding=0)
    return dataclasses.replace(op, same=True, padding=0, ceil_mode=False)


def _floor_plan(op: Any) -> Any:
    return dataclasses.replace(op, ceil_mode=False)


def _is_max_pool(op: Any) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "max" and op.ceil_mode


def _transposed_kernels(p: spec.Plan, params: Params) -> Params:
    """What a kernel loaded through transpose(3, 2, 1, 0) as HWIO computes, as an OIHW
    kernel: its height and width swapped."""
    keys = {conv_weight(u) for u in p.conv_units() if u.kernel > 1}
    return {k: np.ascontiguousarray(w.transpose(0, 1, 3, 2)) if k in keys else w for k, w in params.items()}


def _hwc_rows(p: spec.Plan, params: Params) -> Params:
    """A dense layer fed an (H, W, C) flatten through rows meant for (C, H, W), as an
    equivalent layer on PyTorch's (C, H, W) flatten: input j of the HWC order is input
    ``order[j]`` of the CHW one."""
    out = dict(params)
    for d in [*(a.fc1 for a in p.aux), p.fc]:
        if _flattened(d):
            assert d.flattened_from is not None
            order = np.arange(d.in_features).reshape(d.flattened_from).transpose(1, 2, 0).reshape(-1)
            w = params[f"{d.name}.weight"]
            moved = np.empty_like(w)
            moved[:, order] = w
            out[f"{d.name}.weight"] = moved
    return out


def _eps_plan(default: float) -> Callable[[spec.Plan], spec.Plan]:
    def plan(p: spec.Plan) -> spec.Plan:
        norm = p.variant.convs.norm
        assert norm is not None
        return map_ops(
            p,
            lambda op: (
                dataclasses.replace(op, norm=dataclasses.replace(op.norm, eps=default))
                if _variant_eps(op, norm.eps)
                else op
            ),
        )

    return plan


def _tf_alpha_plan(p: spec.Plan) -> spec.Plan:
    return map_ops(p, lambda op: dataclasses.replace(op, alpha=op.alpha * op.size) if isinstance(op, spec.LRN) else op)


def _untransformed(p: spec.Plan) -> spec.Plan:
    return dataclasses.replace(p, transform=None, options=dataclasses.replace(p.options, transform_input=False))


def _bgr(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, ::-1])


def _paper_5x5_plan(op: Any) -> Any:
    return dataclasses.replace(op, kernel=5, padding=0 if op.same else 2)


def _padded_kernels(p: spec.Plan, params: Params) -> Params:
    return _padded_at_the_end(params)


def _symmetric_plan(op: Any) -> Any:
    if isinstance(op, spec.ConvUnit):
        return dataclasses.replace(op, same=False, padding=op.kernel // 2)
    return dataclasses.replace(op, same=False, padding=(op.kernel - 1) // 2)


def _same_op(op: Any) -> bool:
    return isinstance(op, (spec.ConvUnit, spec.Pool)) and op.same


# --------------------------------------------------------------------------------------
# Mistakes of hand-written PyTorch ports, made from their replay
# --------------------------------------------------------------------------------------


def replayed(replay: Replay) -> Broken:
    """A PyTorch port making the mistake as ``replay`` states it: a model built from the
    changed plan (so PyTorch's channels-last copy, made from the plan, keeps it), the
    weights changed on the way in, the input on the way in, the logits on the way out."""

    def make(b: Backend) -> Backend:
        def build(variant: Any, *args: Any, **options: Any) -> Any:
            model = b.build(variant, *args, **options)
            if replay.plan is None:
                return model
            mistaken = type(model)(replay.plan(model.plan)).to(next(model.parameters()).dtype)
            b.from_canonical(mistaken, b.to_canonical(model))
            return mistaken.eval()

        def from_canonical(model: Any, params: Any) -> None:
            b.from_canonical(model, params if replay.params is None else replay.params(model.plan, dict(params)))

        def inputs(x: Any) -> Any:
            return x if replay.inputs is None else replay.inputs(x)

        def stages(model: Any, x: Any, *args: Any, **kw: Any) -> dict[str, np.ndarray]:
            out = b.stages(model, inputs(x), *args, **kw)
            if replay.logits is not None:
                out["logits"] = replay.logits(out["logits"])
            return out

        def forward(model: Any, x: Any, *args: Any, **kw: Any) -> Any:
            out = b.forward(model, inputs(x), *args, **kw)
            if replay.logits is None:
                return out
            return (replay.logits(out[0]), *out[1:]) if isinstance(out, tuple) else replay.logits(out)

        return patched(b, build=build, from_canonical=from_canonical, stages=stages, forward=forward)

    return _returning(make)


def _where_relu(present: bool) -> Callable[[spec.Plan, int], str | None]:
    none = "no conv unit has a ReLU of its own (its ReLUs are stages)" if present else "every conv has its ReLU already"
    return lambda p, size: first_stage(p, lambda op: isinstance(op, spec.ConvUnit) and op.relu == present, none)


def _relu(present: bool) -> Callable[[spec.Plan], spec.Plan]:
    return _ops_where(
        lambda op: isinstance(op, spec.ConvUnit) and op.relu != present,
        lambda op: dataclasses.replace(op, relu=present),
    )


def _where_blocks(p: spec.Plan, size: int) -> str | None:
    for stage in p.stages:
        if isinstance(stage, spec.InceptionUnit):
            return stage.name
    raise NotApplicable("no Inception block")


def _middle_branches_swapped(p: spec.Plan) -> spec.Plan:
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


def _padded_avg(op: Any) -> bool:
    return isinstance(op, spec.Pool) and op.kind == "avg" and op.padding > 0


def _where_padded_avg(p: spec.Plan, size: int) -> str | None:
    return first_stage(p, _padded_avg, "no average pool with padding")


def _count_flipped(op: Any) -> Any:
    return dataclasses.replace(op, count_include_pad=not op.count_include_pad)


def _where_dropout(p: spec.Plan, size: int) -> str | None:
    if p.dropout == 0:
        raise NotApplicable("no dropout before the classifier")
    return "logits"


DROPOUT_SEED = 0  # the broken port's masks, so that ``pitfalls`` measures the same each time


def _torch_dropout_on(b: Backend) -> Backend:
    """``F.dropout(x, p)`` in forward: its ``training`` defaults to True, so eval() does not
    stop it. Run eagerly: PyTorch's channels-last copy is rebuilt from the plan, which has
    no such layer."""
    import torch

    class AlwaysDropout(torch.nn.Module):
        def __init__(self, rate: float) -> None:
            super().__init__()
            self.rate = rate
            self.masks = torch.Generator().manual_seed(DROPOUT_SEED)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            keep = torch.bernoulli(torch.full_like(x, 1 - self.rate), generator=self.masks)
            return x * keep / (1 - self.rate)

    def build(variant: Any, *args: Any, **options: Any) -> Any:
        model = b.build(variant, *args, **options)
        model.dropout = AlwaysDropout(model.plan.dropout)
        return model

    def stages(model: Any, x: Any, *args: Any, **kw: Any) -> dict[str, np.ndarray]:
        return b.stages(model, x, mode=interface.EAGER)

    def forward(model: Any, x: Any, aux: bool = False, *args: Any, **kw: Any) -> Any:
        return b.forward(model, x, aux, mode=interface.EAGER)

    return patched(b, build=build, stages=stages, forward=forward)


_RELU_MISSING = Replay(plan=_relu(False))
_RELU_ADDED = Replay(plan=_relu(True))
_BRANCHES_SWAPPED = Replay(plan=_middle_branches_swapped)
_SOFTMAX = Replay(logits=softmax)
_COUNT_FLIPPED = Replay(plan=_ops_where(_padded_avg, _count_flipped))

# --------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------

# fmt: off
PITFALLS: dict[str, Pitfall] = {p.name: p for p in (
    Pitfall(
        "same-padding", 'Keras "same" padding on the strided 7x7 conv and the 3x3/2 max pools',
        "inference", "keras", ("googlenet_bn",), "conv padding",
        '"same" puts the odd pixel of padding at the end ((2, 3) on the 7x7/2 conv at an even size) where PyTorch '
        "pads (3, 3), so every window shifts by a pixel while every shape still matches, as in d2l's TensorFlow "
        "GoogLeNet.",
        _where_same, _returning(lambda b: rebuilt(b, _keras_same)),
        Replay(plan=_ops_where(_same_targets, _same_plan)),
    ),
    Pitfall(
        "floor-pooling", "max pools rounding their output size down (MXNet's default pooling_convention)",
        "inference", "mxnet", ("googlenet_bn",), "ceil-mode pools",
        "torchvision and Caffe round the pooled size up (ceil_mode=True); rounding down drops the last window on an "
        "even map (112 -> 55, not 56, at 224), so every later stage sees a smaller picture.",
        _where_floor, _returning(lambda b: rebuilt(b, _mxnet_floor)),
        Replay(plan=_ops_where(_is_max_pool, _floor_plan)),
    ),
    Pitfall(
        "kernel-transposed", "a conv kernel transposed the wrong way: OIHW -> HWIO as transpose(3, 2, 1, 0)",
        "inference", "keras", ("googlenet",), "kernel layouts",
        "swapping a kernel's height and width keeps a square kernel's shape, so nothing fails to load: every "
        "spatial filter is mirrored across its diagonal, from the first conv on.",
        _where_kernel, _keras_kernel_transposed, Replay(params=_transposed_kernels),
    ),
    Pitfall(
        "dense-rows", "dense rows not permuted for an NHWC flatten",
        "inference", "keras", ("googlenet_bn", "inception_mnist"), "flatten before a dense layer",
        "Keras flattens a map in (H, W, C) order and PyTorch in (C, H, W), so a dense layer reading a flattened map "
        "larger than 1 x 1 (the aux heads' fc1, the fc of Liu's nets) must have its rows reordered.",
        _where_dense, _keras_dense_unpermuted, Replay(params=_hwc_rows),
    ),
    Pitfall(
        "bn-eps-gluon", f"BatchNorm epsilon left at Gluon's default ({GLUON_BN_EPS:g})",
        "inference", "mxnet", ("googlenet_bn",), "BatchNorm",
        "BatchNorm divides by sqrt(running_var + eps): torchvision's GoogLeNet uses eps 1e-3, and where running "
        "variances are that small (here 1e-3 to 1e-2) Gluon's 1e-5 changes every channel's gain.",
        _where_eps(GLUON_BN_EPS), _returning(lambda b: rebuilt(b, _mxnet_default_eps)),
        Replay(plan=_eps_plan(GLUON_BN_EPS)),
    ),
    Pitfall(
        "bn-eps-keras", f"BatchNorm epsilon left at Keras's default ({KERAS_BN_EPS:g})",
        "inference", "keras", ("googlenet_cifar",), "BatchNorm",
        "pytorch-cifar100 keeps PyTorch's eps 1e-5, and Keras's BatchNormalization defaults to 1e-3: with running "
        "variances of 1e-3 to 1e-2 the denominator sqrt(var + eps) grows by up to 40%.",
        _where_eps(KERAS_BN_EPS), _returning(lambda b: rebuilt(b, _keras_default_eps)),
        Replay(plan=_eps_plan(KERAS_BN_EPS)),
    ),
    Pitfall(
        "lrn-alpha", "LRN alpha not divided by the window size (TensorFlow's operator)",
        "inference", "keras", ("googlenet_lrn",), "LRN",
        "Caffe, PyTorch and MXNet weigh the window's sum of squares by alpha / size, TensorFlow's "
        "local_response_normalization by alpha itself: passed unchanged, alpha normalises 5 times as hard.",
        _where_lrn, _returning(lambda b: rebuilt(b, _keras_tf_alpha)), Replay(plan=_tf_alpha_plan),
    ),
    Pitfall(
        "transform-input", "transform_input forgotten for torchvision's weights",
        "inference", "torch", ("googlenet_bn",), None,
        "torchvision's GoogLeNet weights expect each channel re-mapped from ImageNet's mean and std to "
        "(x - 0.5) / 0.5 (transform_input=True, which torchvision sets only when it loads them itself), so without "
        "it every image reaches conv1 off by a per-channel scale and shift.",
        _where_transform, _returning(_without_transform), Replay(plan=_untransformed),
    ),
    Pitfall(
        "rgb-bgr", "RGB fed to weights trained on BGR",
        "inference", "torch", ("googlenet_lrn",), None,
        "Caffe's models (bvlc_googlenet among them) were trained on BGR images, OpenCV's order: feeding RGB swaps "
        "the first and third input channels, so conv1 sees another image.",
        _where_bgr, _returning(_rgb_for_bgr), Replay(inputs=_bgr),
    ),
    Pitfall(
        "bn-momentum", "BatchNorm momentum passed to Gluon untranslated (training)",
        "training", "mxnet", ("googlenet_cifar",), "BatchNorm",
        "PyTorch's BatchNorm momentum 0.1 is the weight of the new batch, Gluon's and Keras's the weight of the old "
        "statistic: passed as is, the running statistics keep 10% of the old instead of 90%, while the loss and "
        "gradients still agree.",
        _needs_bn("running statistics after step 1"), _returning(lambda b: rebuilt(b, _mxnet_untranslated_momentum)),
    ),
    Pitfall(
        "running-variance", "biased instead of unbiased running variance: Keras's stock BatchNormalization (training)",
        "training", "keras", ("googlenet_cifar",), "BatchNorm running variance",
        "PyTorch folds the unbiased batch variance into its running variance, Keras and MXNet the biased one, "
        "n / (n - 1) smaller (3% at a 4 x 4 map and batch 2): training agrees, the statistics inference uses do not.",
        _needs_bn("running statistics after step 1"), _keras_stock_batchnorm,
    ),
    Pitfall(
        "aux-weight", "the aux losses weighted 1.0 instead of 0.3 (training)",
        "training", "mxnet", ("googlenet",), None,
        "the paper adds each aux classifier's loss with weight 0.3; with 1.0 the loss differs from the first step, "
        "and so do the gradients of every layer up to inception4d.",
        _where_aux_weight, _returning(_mxnet_aux_weight_one),
    ),
    Pitfall(
        "slim-5x5", "the 5x5 branch that is 3x3: TF-slim's kernels zero-filled at the end to the paper's 5x5",
        "inference", "torch", ("googlenet_slim",), None,
        "TF-slim's (and torchvision's) third branch is a 3x3 conv though Table 1 says 5x5; a port that builds the "
        "paper's 5x5 (padding 2) and pads the 3x3 kernels at the end loads without complaint but shifts every "
        "window of that branch by a pixel (zero-filled around the centre it would be exact).",
        _where_5x5, _returning(lambda b: as_variant(b, _paper_5x5, _padded_at_the_end, _cropped_back)),
        Replay(plan=_ops_where(_branch3_3x3, _paper_5x5_plan), params=_padded_kernels),
    ),
    Pitfall(
        "symmetric-padding", "symmetric instead of TensorFlow's SAME padding on TF-slim's strided conv and pools",
        "inference", "torch", ("googlenet_slim",), "conv padding",
        "TensorFlow's SAME pads the 7x7/2 conv (2, 3) and the 3x3/2 pools (0, 1) on an even map; PyTorch's "
        "padding=3 and padding=1 (torchvision's) keep every shape and move every window by a pixel. On an odd map "
        "SAME is symmetric, so those sizes hide it.",
        _where_symmetric, _returning(lambda b: as_variant(b, _symmetric)),
        Replay(plan=_ops_where(_same_op, _symmetric_plan)),
    ),
    Pitfall(
        "slim-gamma", "a BatchNorm gamma that is not there: Gluon's default scale=True for TF-slim's (training)",
        "training", "mxnet", ("googlenet_slim",), "BatchNorm",
        "TF-slim's BatchNorm has no scale; a layer built with one starts it at 1, so inference and the first step "
        "agree, but the scale trains, and from the second step on the network is another one.",
        _where_gamma, _returning(lambda b: rebuilt(b, _mxnet_gamma)),
    ),
    Pitfall(
        "sgd-momentum", 'SGD momentum "translated" to 1 - m like BatchNorm\'s (training)',
        "training", "keras", ("inception_mnist",), "SGD momentum",
        "SGD's momentum means the same in all three (the weight of the old velocity); 1 - m changes nothing in the "
        "first step, while the velocity is still zero, and every weight in the second: why the check takes two steps.",
        lambda p, size: "weights after step 2", _returning(_keras_sgd_one_minus),
    ),
    Pitfall(
        "relu-missing", "the ReLU left out of the conv unit: conv -> BatchNorm, no activation",
        "inference", "torch", ("googlenet_bn",), None,
        "a conv unit written as return self.bn(self.conv(x)) loads every weight and keeps every shape, but passes "
        "the negative values on that the ReLU would have cut: from the first conv on the network is another one.",
        _where_relu(True), replayed(_RELU_MISSING), _RELU_MISSING,
    ),
    Pitfall(
        "relu-added", "a ReLU after the convs that have none (Liu's Inception block written with BasicConv2d)",
        "inference", "torch", ("inception_mnist",), None,
        "Liu's convs and a residual block's second conv have no ReLU of their own (his stem applies it after the "
        "pool); a port writing them as torchvision's BasicConv2d cuts every negative value the next layer expects.",
        _where_relu(False), replayed(_RELU_ADDED), _RELU_ADDED,
    ),
    Pitfall(
        "dropout-on", "dropout left on at inference: F.dropout(x, p) without training=self.training",
        "inference", "torch", ("googlenet_cifar",), "inference mode",
        "F.dropout's training argument defaults to True, so a forward written with it keeps dropping features after "
        "model.eval(): every stage before the classifier agrees, and the logits change from one run to the next.",
        _where_dropout, _returning(_torch_dropout_on),
    ),
    Pitfall(
        "branch-order", "an Inception block's 3x3 and 5x5 branches concatenated in each other's place",
        "inference", "torch", ("googlenet_bn",), "layout",
        "the order of torch.cat is the next layer's channel order: the 5x5 branch before the 3x3 one (Liu's lecture "
        "order against the paper's) keeps every shape and hands every later conv its input channels shuffled.",
        _where_blocks, replayed(_BRANCHES_SWAPPED), _BRANCHES_SWAPPED,
    ),
    Pitfall(
        "softmax-output", "softmax in the model's output instead of the logits",
        "inference", "torch", ("googlenet_cifar",), None,
        "torchvision's GoogLeNet returns logits (CrossEntropyLoss takes its own log-softmax); a model ending in "
        "softmax returns probabilities: the ranking of the classes agrees, the values do not.",
        lambda p, size: "logits", replayed(_SOFTMAX), _SOFTMAX,
    ),
    Pitfall(
        "count-include-pad", "an average pool leaving its zero padding out of the mean where the source counts it",
        "inference", "torch", ("inception_mnist",), None,
        'F.avg_pool2d counts zero padding in the mean (count_include_pad=True), Keras\'s AveragePooling2D(padding='
        '"same") does not: a 3x3/1 pool padded by 1 divides its border cells by 4 or 6 instead of 9 (and the '
        "reverse where a source excludes it).",
        _where_padded_avg, replayed(_COUNT_FLIPPED), _COUNT_FLIPPED,
    ),
)}
# fmt: on


def where(pitfall: Pitfall, p: spec.Plan, size: int) -> tuple[str | None, str | None]:
    """(stage or quantity where the mistake shows, None) or (None, why it cannot apply)."""
    try:
        return pitfall.where(p, size), None
    except NotApplicable as e:
        return None, str(e)
