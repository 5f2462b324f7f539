"""Each porting mistake made in a framework's port: the ``broken(backend)`` of a pitfall,
a context manager giving the backend with the mistake made the way a real port makes it
(a patched build, a weight adapter monkeypatched for the duration, a swapped input), or,
for hand-written PyTorch ports, made from the mistake's replay (:func:`replayed`)."""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np

from .. import interface, spec
from ..interface import Backend
from .locate import same_targets
from .replays import Replay

Broken = Callable[[Backend], contextlib.AbstractContextManager[Backend]]


# The framework defaults a port inherits when it does not pass a value.
GLUON_BN_EPS = 1e-5  # mxnet.gluon.nn.BatchNorm(epsilon=1e-5)
KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization(epsilon=1e-3)


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
def _as_is(b: Backend) -> Iterator[Backend]:
    yield b


def made_by(make: Callable[[Backend], Backend]) -> Broken:
    """A ``broken`` for mistakes that need nothing undone afterwards."""
    return lambda b: _as_is(make(b))


def _same_max_pool(x: Any) -> Any:
    from keras import ops

    return ops.max_pool(x, 3, 2, padding="same")


def keras_same(model: Any) -> None:
    from impl_keras.engine import walk
    from impl_keras.layers import BasicConv2d, Pool2D

    for layer in list(walk(model)):
        if isinstance(layer, BasicConv2d) and same_targets(layer.unit):
            layer.pad = None
            layer.conv.padding = "same"
        elif isinstance(layer, Pool2D) and same_targets(layer.pool):
            layer.call = _same_max_pool  # type: ignore[method-assign]  # this instance only


def mxnet_floor(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    def floor(block: Any) -> None:
        if isinstance(block, nn.MaxPool2D):
            options(block)["pooling_convention"] = "valid"  # MXNet's default: round down

    model.apply(floor)


@contextlib.contextmanager
def keras_kernel_transposed(b: Backend) -> Iterator[Backend]:
    import impl_keras.weights

    # OIHW -> HWIO must be transpose(2, 3, 1, 0); (3, 2, 1, 0) swaps the kernel's height
    # and width, which a square kernel's shape cannot show.
    with mock.patch.object(impl_keras.weights, "oihw_to_hwio", lambda w: w.transpose(3, 2, 1, 0)):
        yield b


@contextlib.contextmanager
def keras_dense_unpermuted(b: Backend) -> Iterator[Backend]:
    import impl_keras.weights

    # (out, in) -> (in, out) only: the rows stay in PyTorch's (C, H, W) order
    with mock.patch.object(impl_keras.weights, "dense_to_keras", lambda d: lambda w: w.T):
        yield b


def mxnet_default_eps(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    eps = model.plan.variant.convs.norm.eps

    def default(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["eps"] == eps:
            options(block)["eps"] = GLUON_BN_EPS

    model.apply(default)


def keras_default_eps(model: Any) -> None:
    from keras import layers

    from impl_keras.engine import walk

    eps = model.plan.variant.convs.norm.eps
    for layer in walk(model):
        if isinstance(layer, layers.BatchNormalization) and layer.epsilon == eps:
            layer.epsilon = KERAS_BN_EPS


def mxnet_untranslated_momentum(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import options

    # PyTorch's 0.1 (the weight of the new batch) passed as Gluon's momentum (the weight of the old)
    model.apply(lambda b: options(b).__setitem__("momentum", 0.1) if isinstance(b, nn.BatchNorm) else None)


@contextlib.contextmanager
def keras_stock_batchnorm(b: Backend) -> Iterator[Backend]:
    """Keras's own BatchNormalization update: the biased batch variance into the moving one."""
    from keras import layers, ops

    import impl_keras.layers

    def stock_call(self: Any, x: Any, training: Any = None, mask: Any = None) -> Any:
        if training and self.record:
            self.batch_stats = ops.moments(x, axes=[0, 1, 2])
        return layers.BatchNormalization.call(self, x, training=training, mask=mask)

    with mock.patch.object(impl_keras.layers.BatchNorm, "call", stock_call):
        yield b


def keras_tf_alpha(model: Any) -> None:
    from impl_keras.engine import walk
    from impl_keras.layers import LocalResponseNorm

    for layer in walk(model):
        if isinstance(layer, LocalResponseNorm):
            layer.scale = layer.lrn.alpha  # TensorFlow's per-element weight, not alpha / size


def without_transform(b: Backend) -> Backend:
    def build(variant: Any, *args: Any, **options: Any) -> Any:
        return b.build(variant, *args, **{**options, "transform_input": False})

    return patched(b, build=build)


def rgb_for_bgr(b: Backend) -> Backend:
    def swap(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, ::-1])

    return patched(
        b,
        stages=lambda model, x: b.stages(model, swap(x)),
        forward=lambda model, x, *a, **k: b.forward(model, swap(x), *a, **k),
    )


def mxnet_aux_weight_one(b: Backend) -> Backend:
    def trainer(model: Any, lr: float, momentum: float, **kw: Any) -> Any:
        return b.Trainer(model, lr=lr, momentum=momentum, **{**kw, "aux_weight": 1.0})

    return patched(b, Trainer=trainer)


def keras_sgd_one_minus(b: Backend) -> Backend:
    def trainer(model: Any, lr: float, momentum: float, **kw: Any) -> Any:
        return b.Trainer(model, lr=lr, momentum=1.0 - momentum, **kw)

    return patched(b, Trainer=trainer)


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


def paper_5x5(v: spec.Variant) -> spec.Variant:
    return dataclasses.replace(v, branch3=dataclasses.replace(v.branch3, kernel=5))


def cropped_back(params: Any) -> dict[str, np.ndarray]:
    """The 5x5 kernels written back as the checkpoint's 3x3 (the corner they were loaded into)."""
    return {k: w[..., :3, :3].copy() if k.endswith(".branch3.1.conv.weight") else w for k, w in params.items()}


def symmetric(v: spec.Variant) -> spec.Variant:
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


def mxnet_gamma(model: Any) -> None:
    from mxnet.gluon import nn

    from impl_mxnet.engine import make_trainable, options

    def scaled(block: Any) -> None:
        if isinstance(block, nn.BatchNorm) and options(block)["fix_gamma"]:
            options(block)["fix_gamma"] = False  # Gluon's default scale=True: a gamma (of ones) that trains
            make_trainable(block.gamma)

    model.apply(scaled)


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

    return made_by(make)


DROPOUT_SEED = 0  # the broken port's masks, so that ``pitfalls`` measures the same each time


def torch_dropout_on(b: Backend) -> Backend:
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
