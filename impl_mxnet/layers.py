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

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from conformance.spec import LRN, BatchNormSettings, ConvUnit, Op, Pool, PoolUnit, same_pads

from .engine import options


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` keeping PyTorch's running variance. MXNet folds the biased batch
    variance (the one it normalises with) into ``running_var``; PyTorch folds the unbiased
    one, n / (n - 1) times larger (n = N x H x W). The statistics can only be updated by
    the operator (a hybridized graph cannot assign to them), so in training a second
    operator updates them from ``x`` stretched about its batch mean by sqrt(n / (n - 1)),
    whose biased variance is ``x``'s unbiased one; the first normalises with its own update
    off (momentum 1). Every op goes through ``F``, so it hybridizes."""

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if not mx.autograd.is_training():
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        mean = F.mean(x, axis=(0, 2, 3), keepdims=True)
        n = F.sum(F.ones_like(F.slice_axis(x, axis=1, begin=0, end=1)))  # N x H x W, in x's dtype
        stretched = F.broadcast_add(mean, F.broadcast_mul(F.broadcast_sub(x, mean), F.sqrt(n / (n - 1.0))))
        _, stretched_mean, _ = F.BatchNorm(
            F.BlockGrad(stretched),
            gamma,
            beta,
            running_mean,
            running_var,
            output_mean_var=True,
            name="stats",
            **options(self),
        )
        # beta + 0 * that mean: the statistics update runs before the normalisation, in one graph
        beta = F.broadcast_add(beta, F.BlockGrad(stretched_mean) * 0.0)
        y = F.BatchNorm(x, gamma, beta, running_mean, running_var, name="fwd", **{**options(self), "momentum": 1.0})
        return y


class SamePadding:
    """TensorFlow's SAME padding (``conformance.spec.same_pads``) as a fixed graph. It
    depends on the input's size at stride 2 (a 7x7/2 conv pads (2, 3) on 224, (3, 3) on
    223), and a hybridized Gluon graph is traced without sizes, so PyTorch's way (pad by
    the size at run time) is not open here. But one side never changes: at stride 2 an
    odd kernel always pads (k - 1) / 2 after, an even one k / 2 - 1 before. So the input
    is padded by the fixed side and the most the other side takes, and the op rounds
    down, which drops a window that would start in the surplus; when the fixed side is
    the end, the map is flipped first (and the conv kernel with it) and flipped back."""

    def __init__(self, kernel: int, stride: int) -> None:
        sizes = range(4 * max(kernel, stride), 5 * max(kernel, stride))  # every residue mod stride
        pads = [same_pads(size, kernel, stride) for size in sizes]
        befores, afters = {b for b, _ in pads}, {a for _, a in pads}
        if len(befores) > 1 and len(afters) > 1:
            raise ValueError(f"SAME padding of a {kernel}x{kernel}/{stride} window has no fixed side")
        self.flip = len(befores) > 1  # the fixed side is the end: pad it first in flipped order
        self.pad = (max(afters), max(befores)) if self.flip else (max(befores), max(afters))

    def pad_width(self) -> tuple[int, ...]:
        first, last = self.pad
        return (0, 0, 0, 0, first, last, first, last)


def flipped(F, x):
    """``x`` upside down and mirrored (its last two axes reversed), one axis at a time:
    MXNet's ONNX exporter reads ``flip``'s axis as a single int."""
    return F.flip(F.flip(x, axis=2), axis=3)


class SameConv2D(nn.Conv2D):
    """``nn.Conv2D`` with TensorFlow's SAME padding (``SamePadding``); the same parameters."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__(
            unit.out_channels, unit.kernel, strides=unit.stride, use_bias=unit.bias, in_channels=unit.in_channels
        )
        self.same = SamePadding(unit.kernel, unit.stride)

    def hybrid_forward(self, F, x, weight, bias=None):
        if self.same.flip:  # run on the flipped map with the flipped kernel: the same products
            x, weight = flipped(F, x), flipped(F, weight)
        x = F.pad(x, mode="constant", pad_width=self.same.pad_width())
        y = super().hybrid_forward(F, x, weight, bias)
        return flipped(F, y) if self.same.flip else y


class SameMaxPool2D(nn.HybridBlock):
    """A max pool with TensorFlow's SAME padding (``SamePadding``): -inf padding, so a
    padded cell never wins, as in TensorFlow."""

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.kernel, self.stride, self.same = pool.kernel, pool.stride, SamePadding(pool.kernel, pool.stride)

    def hybrid_forward(self, F, x):
        if self.same.flip:  # a max does not care about order: only the map is flipped
            x = flipped(F, x)
        x = F.pad(x, mode="constant", constant_value=-np.inf, pad_width=self.same.pad_width())
        y = F.Pooling(x, kernel=(self.kernel,) * 2, stride=(self.stride,) * 2, pool_type="max")
        return flipped(F, y) if self.same.flip else y


def make_norm(channels: int, norm: BatchNormSettings) -> BatchNorm:
    # momentum: the weight of the old statistic, 1 - the spec's (PyTorch's) 0.1; BatchNorm
    # calls its scale and shift gamma and beta. scale=False (TF-slim's) keeps a gamma of
    # ones that the operator ignores (fix_gamma) and no optimiser updates (grad_req null).
    return BatchNorm(epsilon=norm.eps, momentum=1.0 - norm.momentum, scale=norm.scale, in_channels=channels)


class BasicConv2d(nn.HybridBlock):
    """conv -> [BatchNorm] -> [ReLU]. Gluon pads symmetrically, like PyTorch;
    TensorFlow's SAME is ``SameConv2D``."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__()
        self.conv = (
            SameConv2D(unit)
            if unit.same
            else nn.Conv2D(
                unit.out_channels,
                unit.kernel,
                strides=unit.stride,
                padding=unit.padding,
                use_bias=unit.bias,
                in_channels=unit.in_channels,
            )
        )
        self.bn = None if unit.norm is None else make_norm(unit.out_channels, unit.norm)
        self.relu = unit.relu

    def hybrid_forward(self, F, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class PlainConv2d(nn.Conv2D):
    """A bare conv, as Liu's lecture writes it (weights at ``incep1.branch1x1.weight``),
    with the ReLU its unit asks for."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__(
            unit.out_channels,
            unit.kernel,
            strides=unit.stride,
            padding=unit.padding,
            use_bias=unit.bias,
            activation="relu" if unit.relu else None,
            in_channels=unit.in_channels,
        )


class AdaptiveAvgPool2D(nn.HybridBlock):
    """``torch.nn.AdaptiveAvgPool2d``: Gluon has it only as a contrib operator."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def hybrid_forward(self, F, x):
        return F.contrib.AdaptiveAvgPooling2D(x, output_size=self.size)


def make_pool(pool: PoolUnit) -> nn.HybridBlock:
    if not isinstance(pool, Pool):
        return AdaptiveAvgPool2D(pool.size)
    if pool.same:
        return SameMaxPool2D(pool)
    if pool.kind == "max":  # ceil_mode is MXNet's pooling_convention="full"
        return nn.MaxPool2D(pool.kernel, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
    return nn.AvgPool2D(
        pool.kernel, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=pool.count_include_pad
    )


class LocalResponseNorm(nn.HybridBlock):
    """Gluon has no LRN block, only the operator; it divides alpha by nsize, as the spec.
    The operator is float32 only: a float64 block (the training-parity check) sums the
    window with a sum pool over the channel axis instead. The dtype is recorded by
    ``cast``, since a hybridized graph's symbols carry none."""

    def __init__(self, lrn: LRN) -> None:
        super().__init__()
        self.lrn = lrn
        self.dtype = np.dtype(np.float32)

    def cast(self, dtype) -> None:
        self.dtype = np.dtype(dtype)
        super().cast(dtype)

    def hybrid_forward(self, F, x):
        lrn = self.lrn
        if self.dtype == np.float32:
            return F.LRN(x, alpha=lrn.alpha, beta=lrn.beta, knorm=lrn.k, nsize=lrn.size)
        # PyTorch's window [c - size // 2, c + (size - 1) // 2], zero-padded: channels become
        # the height of an N x 1 x C x (H * W) map, summed over size rows
        squares = F.reshape(F.square(x), shape=(0, -4, 1, -1, -3))
        squares = F.pad(squares, mode="constant", pad_width=(0, 0, 0, 0, lrn.size // 2, (lrn.size - 1) // 2, 0, 0))
        window = F.Pooling(squares, kernel=(lrn.size, 1), pool_type="sum", stride=(1, 1))
        return x / F.power(lrn.k + lrn.alpha / lrn.size * F.reshape_like(window, x), lrn.beta)


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
