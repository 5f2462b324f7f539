"""The pitfalls: porting mistakes, each one small function that breaks a correct port.

Every mistake is defined once, here; ``python -m conformance pitfalls`` measures
what it does, and the negative-control tests (``tests/test_negative_controls.py``,
``tests/test_training.py``) use the same definitions to show that ``check`` fails on
it. A :class:`Pitfall` is data (what, where, why) plus ``broken(backend)``: a context
manager giving the backend with the mistake made, the way a real port makes it (a
patched build, a weight adapter monkeypatched for the duration, a swapped input).
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
    if isinstance(stage, spec.InceptionBlock):
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
    from impl_keras.layers import BasicConv2d, Pool2D, walk

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

    from impl_mxnet.layers import options

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

    from impl_mxnet.layers import options

    eps = model.plan.variant.convs.norm.eps

    def default(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["eps"] == eps:
            options(block)["eps"] = GLUON_BN_EPS

    model.apply(default)


def _keras_default_eps(model: Any) -> None:
    from keras import layers

    from impl_keras.layers import walk

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

    from impl_mxnet.layers import options

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
    from impl_keras.layers import LocalResponseNorm, walk

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

    from impl_mxnet.layers import make_trainable, options

    def scaled(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["fix_gamma"]:
            options(block)["fix_gamma"] = False  # Gluon's default scale=True: a gamma (of ones) that trains
            make_trainable(block.gamma)

    model.apply(scaled)


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
    ),
    Pitfall(
        "floor-pooling", "max pools rounding their output size down (MXNet's default pooling_convention)",
        "inference", "mxnet", ("googlenet_bn",), "ceil-mode pools",
        "torchvision and Caffe round the pooled size up (ceil_mode=True); rounding down drops the last window on an "
        "even map (112 -> 55, not 56, at 224), so every later stage sees a smaller picture.",
        _where_floor, _returning(lambda b: rebuilt(b, _mxnet_floor)),
    ),
    Pitfall(
        "kernel-transposed", "a conv kernel transposed the wrong way: OIHW -> HWIO as transpose(3, 2, 1, 0)",
        "inference", "keras", ("googlenet",), "kernel layouts",
        "swapping a kernel's height and width keeps a square kernel's shape, so nothing fails to load: every "
        "spatial filter is mirrored across its diagonal, from the first conv on.",
        _where_kernel, _keras_kernel_transposed,
    ),
    Pitfall(
        "dense-rows", "dense rows not permuted for an NHWC flatten",
        "inference", "keras", ("googlenet_bn", "inception_mnist"), "flatten before a dense layer",
        "Keras flattens a map in (H, W, C) order and PyTorch in (C, H, W), so a dense layer reading a flattened map "
        "larger than 1 x 1 (the aux heads' fc1, the fc of Liu's nets) must have its rows reordered.",
        _where_dense, _keras_dense_unpermuted,
    ),
    Pitfall(
        "bn-eps-gluon", f"BatchNorm epsilon left at Gluon's default ({GLUON_BN_EPS:g})",
        "inference", "mxnet", ("googlenet_bn",), "BatchNorm",
        "BatchNorm divides by sqrt(running_var + eps): torchvision's GoogLeNet uses eps 1e-3, and where running "
        "variances are that small (here 1e-3 to 1e-2) Gluon's 1e-5 changes every channel's gain.",
        _where_eps(GLUON_BN_EPS), _returning(lambda b: rebuilt(b, _mxnet_default_eps)),
    ),
    Pitfall(
        "bn-eps-keras", f"BatchNorm epsilon left at Keras's default ({KERAS_BN_EPS:g})",
        "inference", "keras", ("googlenet_cifar",), "BatchNorm",
        "pytorch-cifar100 keeps PyTorch's eps 1e-5, and Keras's BatchNormalization defaults to 1e-3: with running "
        "variances of 1e-3 to 1e-2 the denominator sqrt(var + eps) grows by up to 40%.",
        _where_eps(KERAS_BN_EPS), _returning(lambda b: rebuilt(b, _keras_default_eps)),
    ),
    Pitfall(
        "lrn-alpha", "LRN alpha not divided by the window size (TensorFlow's operator)",
        "inference", "keras", ("googlenet_lrn",), "LRN",
        "Caffe, PyTorch and MXNet weigh the window's sum of squares by alpha / size, TensorFlow's "
        "local_response_normalization by alpha itself: passed unchanged, alpha normalises 5 times as hard.",
        _where_lrn, _returning(lambda b: rebuilt(b, _keras_tf_alpha)),
    ),
    Pitfall(
        "transform-input", "transform_input forgotten for torchvision's weights",
        "inference", "torch", ("googlenet_bn",), None,
        "torchvision's GoogLeNet weights expect each channel re-mapped from ImageNet's mean and std to "
        "(x - 0.5) / 0.5 (transform_input=True, which torchvision sets only when it loads them itself), so without "
        "it every image reaches conv1 off by a per-channel scale and shift.",
        _where_transform, _returning(_without_transform),
    ),
    Pitfall(
        "rgb-bgr", "RGB fed to weights trained on BGR",
        "inference", "torch", ("googlenet_lrn",), None,
        "Caffe's models (bvlc_googlenet among them) were trained on BGR images, OpenCV's order: feeding RGB swaps "
        "the first and third input channels, so conv1 sees another image.",
        _where_bgr, _returning(_rgb_for_bgr),
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
    ),
    Pitfall(
        "symmetric-padding", "symmetric instead of TensorFlow's SAME padding on TF-slim's strided conv and pools",
        "inference", "torch", ("googlenet_slim",), "conv padding",
        "TensorFlow's SAME pads the 7x7/2 conv (2, 3) and the 3x3/2 pools (0, 1) on an even map; PyTorch's "
        "padding=3 and padding=1 (torchvision's) keep every shape and move every window by a pixel. On an odd map "
        "SAME is symmetric, so those sizes hide it.",
        _where_symmetric, _returning(lambda b: as_variant(b, _symmetric)),
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
)}
# fmt: on


def where(pitfall: Pitfall, p: spec.Plan, size: int) -> tuple[str | None, str | None]:
    """(stage or quantity where the mistake shows, None) or (None, why it cannot apply)."""
    try:
        return pitfall.where(p, size), None
    except NotApplicable as e:
        return None, str(e)
