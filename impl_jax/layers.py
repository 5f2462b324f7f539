"""The layers of GoogLeNet's units in JAX + Flax (``flax.nnx``), one maker per kind of op
in the plan.

Mirrors ``impl_torch/layers.py``, ``impl_keras/layers.py`` and ``impl_mxnet/layers.py``:
the same makers in the same order. Flax has convs, dense layers and dropout; what it
lacks is here, with PyTorch's semantics, written on ``jax.lax``:

* pools with PyTorch's symmetric padding and ceil rounding (``Pool2D``): a max pool is
  ``lax.reduce_window`` padded with -inf, the reduction's own initial value, so a
  padded cell never wins (a zero would beat negative activations); an average pool sums
  zero-padded windows and divides by the cells PyTorch counts (``count_include_pad``,
  never the ceil mode's extra end);
* the adaptive average pool of torchvision's aux heads (``AdaptiveAvgPool2D``);
* local response normalisation (``LocalResponseNorm``);
* BatchNorm with PyTorch's running variance and momentum (``BatchNorm``).

Activations are NHWC and kernels HWIO (``flax.nnx.Conv``'s layout); the weight adapter
permutes them from the canonical OIHW. Every layer takes its dtype when made: a Flax
parameter's dtype is fixed when it is created.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from conformance.spec import (
    LRN,
    AdaptiveAvgPool,
    BatchNormSettings,
    ConvUnit,
    Op,
    Pool,
    PoolUnit,
    adaptive_windows,
    pool_out,
)
from conformance.spec import same_pads as tf_same_pads

from .engine import Recorded


def zeros(key: jax.Array | None, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """An initializer of zeros made in numpy and copied in: ``nnx.initializers.zeros``
    compiles a fill for every shape, and ``build`` overwrites every weight anyway."""
    return jnp.asarray(np.zeros(shape, dtype))


def _rngs() -> nnx.Rngs:
    """Flax's layers want random keys to initialise; every weight starts at zero and
    ``build`` loads the suite's initial weights (the same in every framework)."""
    return nnx.Rngs(0)


class BatchNormalization(nnx.Module):
    """BatchNorm as PyTorch computes it. Flax's ``nnx.BatchNorm`` takes ``momentum`` as
    the weight of the old statistic (0.99 by default where PyTorch's 0.1 weighs the new
    one) and folds the biased batch variance into ``var``; PyTorch folds the unbiased
    one, n / (n - 1) larger, so the running statistics would drift apart in training."""

    def __init__(self, channels: int, norm: BatchNormSettings, dtype) -> None:
        self.eps, self.momentum = norm.eps, norm.momentum  # the spec's: the new statistic's weight
        self.scale = nnx.Param(jnp.asarray(np.ones((channels,), dtype))) if norm.scale else None  # none in TF-slim's
        self.bias = nnx.Param(zeros(None, (channels,), dtype))
        self.mean = nnx.BatchStat(zeros(None, (channels,), dtype))
        self.var = nnx.BatchStat(jnp.asarray(np.ones((channels,), dtype)))
        self.use_running_average = True  # Module.train() / eval() switch it
        self.batch_mean: Recorded | None = None  # set by engine.BatchStats
        self.batch_var: Recorded | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average:
            # folded into one scale and one shift per channel, as PyTorch's and TensorFlow's
            # inference kernels fold them: two ops on the activation (eager mode compiles
            # each op per shape), and the per-channel ops are shared by every input size
            alpha = lax.rsqrt(self.var.value + self.eps)
            if self.scale is not None:
                alpha = alpha * self.scale.value
            return x * alpha + (self.bias.value - self.mean.value * alpha)
        mean, var = jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))  # biased, as it normalises
        n = x.shape[0] * x.shape[1] * x.shape[2]
        self.mean.value = (1 - self.momentum) * self.mean.value + self.momentum * mean
        self.var.value = (1 - self.momentum) * self.var.value + self.momentum * var * (n / (n - 1))
        if self.batch_mean is not None and self.batch_var is not None:
            self.batch_mean.value, self.batch_var.value = mean, var
        y = (x - mean) * lax.rsqrt(var + self.eps)
        if self.scale is not None:
            y = y * self.scale.value
        return y + self.bias.value


def make_norm(channels: int, norm: BatchNormSettings, dtype) -> BatchNormalization:
    return BatchNormalization(channels, norm, dtype)


def conv_padding(unit: ConvUnit) -> str | list[tuple[int, int]]:
    """PyTorch pads symmetrically (``padding=3`` is (3, 3)); TensorFlow's SAME (TF-slim's
    units) is lax's own ``"SAME"``, asymmetric at stride 2."""
    return "SAME" if unit.same else [(unit.padding, unit.padding)] * 2


def conv_options(unit: ConvUnit, dtype) -> dict[str, Any]:
    """``nnx.Conv``'s arguments for a unit: zeros until the canonical weights arrive."""
    return {
        "in_features": unit.in_channels,
        "out_features": unit.out_channels,
        "kernel_size": (unit.kernel, unit.kernel),
        "strides": unit.stride,
        "padding": conv_padding(unit),
        "use_bias": unit.bias,
        "dtype": dtype,
        "param_dtype": dtype,
        "kernel_init": zeros,
        "bias_init": zeros,
        "rngs": _rngs(),
    }


class BasicConv2d(nnx.Module):
    """conv -> [BatchNorm] -> [ReLU]."""

    def __init__(self, unit: ConvUnit, dtype) -> None:
        self.conv = nnx.Conv(**conv_options(unit, dtype))
        self.bn = None if unit.norm is None else make_norm(unit.out_channels, unit.norm, dtype)
        self.relu = unit.relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return jax.nn.relu(x) if self.relu else x


class PlainConv2d(nnx.Conv):
    """A bare conv, as Liu's lecture writes it (its kernel at ``incep1.branch1x1.kernel``),
    with the ReLU its unit asks for."""

    def __init__(self, unit: ConvUnit, dtype) -> None:
        super().__init__(**conv_options(unit, dtype))
        self.relu = unit.relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = super().__call__(x)
        return jax.nn.relu(x) if self.relu else x


def pool_pads(size: int, pool: Pool) -> tuple[int, int]:
    """(before, after) padding that makes a valid pool give PyTorch's output size: the
    ceil mode's extra window is padded at the end only. TensorFlow's SAME: its own."""
    if pool.same:
        return tf_same_pads(size, pool.kernel, pool.stride)
    after = (
        (pool_out(size, pool.kernel, pool.stride, pool.padding, pool.ceil_mode) - 1) * pool.stride
        + pool.kernel
        - size
        - pool.padding
    )
    return pool.padding, max(0, after)


def avg_divisor(size: int, pool: Pool) -> np.ndarray:
    """Cells counted in each window's mean along one axis, as PyTorch counts them: padding
    counts if ``count_include_pad``, the ceil mode's extra end never does."""
    start = (
        np.arange(pool_out(size, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)) * pool.stride - pool.padding
    )
    end = np.minimum(start + pool.kernel, size + pool.padding)
    if not pool.count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


class Pool2D(nnx.Module):
    """Max or average pool matching ``torch.nn.MaxPool2d`` / ``AvgPool2d`` (or
    TensorFlow's SAME max pool). Shapes are static under ``jax.jit``, so the padding is
    worked out from the input's size when traced."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.pool
        pads = ((0, 0), pool_pads(x.shape[1], p), pool_pads(x.shape[2], p), (0, 0))
        window, strides = (1, p.kernel, p.kernel, 1), (1, p.stride, p.stride, 1)
        if p.kind == "max":
            # reduce_window pads with its initial value: -inf, so a padded cell never wins
            return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, pads)
        total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, pads)  # zero padding
        cells = np.outer(avg_divisor(x.shape[1], p), avg_divisor(x.shape[2], p))
        return total / jnp.asarray(cells[None, :, :, None], x.dtype)


class AdaptiveAvgPool2D(nnx.Module):
    """``torch.nn.AdaptiveAvgPool2d``: windows [floor(i*n/out), ceil((i+1)*n/out)), which
    overlap unevenly (14 -> 4: [0,4) [3,7) [7,11) [10,14)). Flax has no such layer."""

    def __init__(self, pool: AdaptiveAvgPool) -> None:
        self.size = pool.size

    def __call__(self, x: jax.Array) -> jax.Array:
        # A rectangle's mean is the mean of its row means: pool rows, then columns.
        x = jnp.concatenate(
            [x[:, a:b].mean(axis=1, keepdims=True) for a, b in adaptive_windows(x.shape[1], self.size)], axis=1
        )
        return jnp.concatenate(
            [x[:, :, a:b].mean(axis=2, keepdims=True) for a, b in adaptive_windows(x.shape[2], self.size)], axis=2
        )


def make_pool(pool: PoolUnit) -> Pool2D | AdaptiveAvgPool2D:
    return Pool2D(pool) if isinstance(pool, Pool) else AdaptiveAvgPool2D(pool)


class LocalResponseNorm(nnx.Module):
    """Flax has no LRN layer: ``b = a / (k + alpha / size * window sum of a**2) ** beta``
    over ``size`` neighbouring channels (NHWC: the last axis), zero-padded as PyTorch
    pads."""

    def __init__(self, lrn: LRN) -> None:
        self.lrn = lrn

    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.lrn.size
        pads = ((0, 0), (0, 0), (0, 0), (n // 2, (n - 1) // 2))
        window = lax.reduce_window(jnp.square(x), np.array(0, x.dtype), lax.add, (1, 1, 1, n), (1, 1, 1, 1), pads)
        return x / (self.lrn.k + self.lrn.alpha / n * window) ** self.lrn.beta


def make_lrn(lrn: LRN) -> nnx.Module:
    return LocalResponseNorm(lrn)


class ReLU(nnx.Module):
    """A ReLU as a stage of its own (``relu(mp(conv(x)))``): Flax has the function only."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


def make_relu(name: str) -> nnx.Module:
    return ReLU()


def make_op(op: Op, dtype) -> PlainConv2d | BasicConv2d | Pool2D | AdaptiveAvgPool2D:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op, dtype) if op.plain else BasicConv2d(op, dtype)
    return make_pool(op)


class Sequential(nnx.Module):
    """A numbered chain of ops (``branch2.0``, ``branch2.1``), like ``torch.nn.Sequential``:
    ``nnx.Sequential`` keeps its ops under ``layers``, which would add a level to every
    path."""

    def __init__(self, ops: tuple[Op, ...], dtype) -> None:
        self.count = len(ops)
        for i, op in enumerate(ops):
            setattr(self, str(i), make_op(op, dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.count):
            x = getattr(self, str(i))(x)
        return x


def make_chain(ops: tuple[Op, ...], dtype) -> nnx.Module:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops[0], dtype) if len(ops) == 1 else Sequential(ops, dtype)


def flatten(x: jax.Array) -> jax.Array:
    """A map flattened in PyTorch's (C, H, W) order."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def make_dense(in_features: int, out_features: int, dtype) -> nnx.Linear:
    # zeros: build loads the suite's initial weights
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        param_dtype=dtype,
        kernel_init=zeros,
        bias_init=zeros,
        rngs=nnx.Rngs(0),
    )
