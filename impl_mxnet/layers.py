"""The layers of GoogLeNet's units in MXNet Gluon, one maker per kind of op in the plan.

Mirrors ``impl_torch/layers.py`` and ``impl_keras/layers.py``: the same makers in the
same order. What Gluon lacks is here, with PyTorch's semantics:

* BatchNorm with PyTorch's running variance (``BatchNorm``);
* the adaptive average pool of torchvision's aux heads, a contrib operator only
  (``AdaptiveAvgPool2D``);
* local response normalisation, an operator only (``LocalResponseNorm``).

``hybrid_forward(F, x)``: ``F`` is ``mx.nd`` when run imperatively and ``mx.sym`` once
hybridized, so every op goes through ``F``. Layers are told their ``in_channels`` (from
the spec), so parameters exist right after ``initialize()``, without a first forward.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from conformance.spec import LRN, ConvUnit, Op, Pool, PoolUnit


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` keeping PyTorch's running variance. MXNet folds the biased batch
    variance (the one it normalises with) into ``running_var``; PyTorch folds the unbiased
    one, n / (n - 1) times larger (n = N x H x W). In training the operator runs with its
    own update switched off (momentum 1) and the statistics are updated here."""

    record = False  # the training-parity check sets it: keep the last batch statistics

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if not mx.autograd.is_training():
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        keep = options(self)["momentum"]  # Gluon's momentum: the weight of the old statistic
        y = F.BatchNorm(x, gamma, beta, running_mean, running_var, name="fwd", **{**options(self), "momentum": 1.0})
        with mx.autograd.pause():
            mean = x.mean(axis=(0, 2, 3))
            var = F.square(F.broadcast_sub(x, mean.reshape((1, -1, 1, 1)))).mean(axis=(0, 2, 3))
            n = x.size / x.shape[1]
            running_mean[:] = running_mean * keep + mean * (1.0 - keep)
            running_var[:] = running_var * keep + var * (n / (n - 1.0)) * (1.0 - keep)
        if self.record:
            self.batch_stats = (mean, var)
        return y


class BasicConv2d(nn.HybridBlock):
    """conv -> [BatchNorm] -> [ReLU]. Gluon pads symmetrically, like PyTorch."""

    def __init__(self, u: ConvUnit) -> None:
        super().__init__()
        self.conv = nn.Conv2D(
            u.out_channels, u.kernel, strides=u.stride, padding=u.padding, use_bias=u.bias, in_channels=u.in_channels
        )
        # momentum: the weight of the old statistic, 1 - the spec's (PyTorch's) 0.1;
        # BatchNorm calls its scale and shift gamma and beta
        self.bn = (
            None
            if u.norm is None
            else BatchNorm(epsilon=u.norm.eps, momentum=1.0 - u.norm.momentum, in_channels=u.out_channels)
        )
        self.relu = u.relu

    def hybrid_forward(self, F, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class PlainConv2d(nn.Conv2D):
    """A bare conv, as Liu's lecture writes it (weights at ``incep1.branch1x1.weight``),
    with the ReLU its unit asks for."""

    def __init__(self, u: ConvUnit) -> None:
        super().__init__(
            u.out_channels,
            u.kernel,
            strides=u.stride,
            padding=u.padding,
            use_bias=u.bias,
            activation="relu" if u.relu else None,
            in_channels=u.in_channels,
        )


class AdaptiveAvgPool2D(nn.HybridBlock):
    """``torch.nn.AdaptiveAvgPool2d``: Gluon has it only as a contrib operator."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def hybrid_forward(self, F, x):
        return F.contrib.AdaptiveAvgPooling2D(x, output_size=self.size)


def make_pool(p: PoolUnit) -> nn.HybridBlock:
    if not isinstance(p, Pool):
        return AdaptiveAvgPool2D(p.size)
    if p.kind == "max":  # ceil_mode is MXNet's pooling_convention="full"
        return nn.MaxPool2D(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
    return nn.AvgPool2D(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode, count_include_pad=p.count_include_pad)


class LocalResponseNorm(nn.HybridBlock):
    """Gluon has no LRN block, only the operator; it divides alpha by nsize, as the spec."""

    def __init__(self, lrn: LRN) -> None:
        super().__init__()
        self.lrn = lrn

    def hybrid_forward(self, F, x):
        lrn = self.lrn
        # A Symbol (the hybrid mode, float32 inference) has no dtype: the operator.
        if not isinstance(x, mx.nd.NDArray) or x.dtype == np.float32:
            return F.LRN(x, alpha=lrn.alpha, beta=lrn.beta, knorm=lrn.k, nsize=lrn.size)
        # float64 (the training-parity check): MXNet's LRN kernel is float32 only. The window
        # sum as a 1x1 convolution with a band of ones, PyTorch's window [c - 2, c + 2].
        c = np.arange(x.shape[1])
        band = (c[None, :] >= c[:, None] - lrn.size // 2) & (c[None, :] <= c[:, None] + (lrn.size - 1) // 2)
        weight = mx.nd.array(band[:, :, None, None], dtype=x.dtype)
        window = F.Convolution(F.square(x), weight, kernel=(1, 1), num_filter=len(c), no_bias=True)
        return x / F.power(lrn.k + lrn.alpha / lrn.size * window, lrn.beta)


def make_lrn(lrn: LRN) -> nn.HybridBlock:
    return LocalResponseNorm(lrn)


def make_relu(name: str) -> nn.HybridBlock:
    return nn.Activation("relu")


def make_op(op: Op) -> nn.HybridBlock:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op) if op.plain else BasicConv2d(op)
    return make_pool(op)


def make_chain(ops: tuple[Op, ...]) -> nn.HybridBlock:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    if len(ops) == 1:
        return make_op(ops[0])
    chain = nn.HybridSequential()
    chain.add(*map(make_op, ops))
    return chain


# Gluon 1.9 keeps five things public only as private attributes; these are the suite's
# only calls into them.


def options(block: nn.Block) -> dict:
    """The operator arguments a Gluon layer runs with (``eps``, ``momentum``, ...):
    ``Block._kwargs``; Gluon has no public accessor."""
    return block._kwargs


def named_blocks(block: nn.Block, prefix: str = "") -> Iterator[tuple[str, nn.Block]]:
    """(attribute path, block) for every block in the tree: ``conv1.bn``, ``inception3a.branch2.1.bn``.
    ``Block._children``: Gluon 1.x has no ``named_children``."""
    for name, child in block._children.items():
        path = f"{prefix}{name}"
        yield path, child
        yield from named_blocks(child, path + ".")


def structural_params(block: nn.Block) -> dict[str, mx.gluon.Parameter]:
    """Parameters by attribute path, the names ``save_parameters`` writes:
    ``Block._collect_params_with_prefix``; ``collect_params`` names them by prefix instead."""
    return block._collect_params_with_prefix()


def momentum_states(trainer: mx.gluon.Trainer) -> dict[str, mx.nd.NDArray]:
    """SGD's momentum by parameter name: ``Trainer._updaters[0].states``, keyed by the
    parameter's index in ``Trainer._params`` and made at its first update (one device,
    so the trainer updates locally, not on a kvstore)."""
    updater = trainer._updaters[0]
    return {trainer._params[i].name: s for i, s in updater.states.items() if s is not None}


def set_momentum_states(trainer: mx.gluon.Trainer, states: dict[str, mx.nd.NDArray]) -> None:
    """Set the momentums ``momentum_states`` returned, before or after a first update."""
    updater = trainer._updaters[0]
    for i, param in enumerate(trainer._params):
        if param.name in states:
            updater.states[i] = states[param.name]
            updater.states_synced[i] = True


@contextlib.contextmanager
def onnx_mapping() -> Iterator[None]:
    """``mx.onnx.export_model`` imports ``onnx.mapping``, a module recent onnx releases
    no longer have (onnx 1.23: ``ImportError``): for the export, its two tables are
    rebuilt from ``onnx.helper``'s public functions, then removed again."""
    import onnx
    from onnx import helper

    if "onnx.mapping" in sys.modules or importlib.util.find_spec("onnx.mapping") is not None:
        yield
        return
    mapping = types.ModuleType("onnx.mapping")
    types_ = [t for t in onnx.TensorProto.DataType.values() if t != onnx.TensorProto.UNDEFINED]
    to_np = {}
    for t in types_:
        with contextlib.suppress(KeyError, TypeError, ValueError):  # a type numpy lacks (bfloat16, ...)
            to_np[t] = np.dtype(helper.tensor_dtype_to_np_dtype(t))
    mapping.TENSOR_TYPE_TO_NP_TYPE = to_np  # type: ignore[attr-defined]
    mapping.NP_TYPE_TO_TENSOR_TYPE = {  # type: ignore[attr-defined]
        np.dtype(n): helper.np_dtype_to_tensor_dtype(np.dtype(n)) for n in set(to_np.values())
    }
    sys.modules["onnx.mapping"] = mapping  # for "from onnx import mapping"
    setattr(onnx, "mapping", mapping)  # for onnx.mapping.NP_TYPE_TO_TENSOR_TYPE  # noqa: B010 - onnx declares none
    try:
        yield
    finally:
        sys.modules.pop("onnx.mapping", None)
        delattr(onnx, "mapping")
