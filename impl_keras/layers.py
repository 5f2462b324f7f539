"""Pooling layers Keras lacks, with PyTorch's semantics.

Keras pools with ``padding="valid"`` or TF ``"same"``; PyTorch pads symmetrically and
may round the output size up (``ceil_mode``). Both layers read the static input
size at call time and compute their padding from ``conformance.spec``, so one
model runs at any input size.
"""

from __future__ import annotations

import numpy as np
from keras import layers, ops

from conformance.spec import LRN, AdaptiveAvgPool, Pool, adaptive_windows, pool_out


def _pads(size: int, p: Pool) -> tuple[int, int]:
    """(before, after) padding that makes a valid pool give PyTorch's output size: the
    ceil mode's extra window is padded at the end only."""
    out = pool_out(size, p.kernel, p.stride, p.padding, p.ceil_mode)
    return p.padding, max(0, (out - 1) * p.stride + p.kernel - size - p.padding)


def _avg_divisor(size: int, p: Pool) -> np.ndarray:
    """Cells counted in each window's mean, along one axis, as PyTorch counts them:
    padding counts if ``count_include_pad``, the ceil mode's extra end never does."""
    out = pool_out(size, p.kernel, p.stride, p.padding, p.ceil_mode)
    start = np.arange(out) * p.stride - p.padding
    end = np.minimum(start + p.kernel, size + p.padding)
    if not p.count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return (end - start).astype(np.float32)


class Pool2D(layers.Layer):
    """Max or average pool (NHWC) matching ``torch.nn.MaxPool2d`` / ``AvgPool2d``."""

    def __init__(self, pool: Pool, **kwargs) -> None:
        super().__init__(name=pool.name, **kwargs)
        self.pool = pool

    def call(self, x):
        p = self.pool
        (top, bottom), (left, right) = _pads(x.shape[1], p), _pads(x.shape[2], p)
        if p.kind == "max":
            # -inf padding: a padded cell must never win the max (a zero would beat negatives).
            if top or bottom or left or right:
                x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=-np.inf)
            return ops.max_pool(x, p.kernel, p.stride, padding="valid")
        rows, cols = _avg_divisor(x.shape[1], p), _avg_divisor(x.shape[2], p)
        if top or bottom or left or right:
            x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        y = ops.average_pool(x, p.kernel, p.stride, padding="valid")  # divides by kernel**2
        correction = p.kernel * p.kernel / np.outer(rows, cols)
        if not np.all(correction == 1.0):
            y = y * ops.cast(correction[None, :, :, None], y.dtype)
        return y


class AdaptiveAvgPool2D(layers.Layer):
    """``torch.nn.AdaptiveAvgPool2d`` (NHWC): windows [floor(i*n/out), ceil((i+1)*n/out)),
    which overlap unevenly (14 -> 4: [0,4) [3,7) [7,11) [10,14))."""

    def __init__(self, pool: AdaptiveAvgPool, **kwargs) -> None:
        super().__init__(name=pool.name, **kwargs)
        self.size = pool.size

    def call(self, x):
        # A rectangle's mean is the mean of its row means: pool rows, then columns.
        x = ops.concatenate([ops.mean(x[:, a:b], axis=1, keepdims=True)
                             for a, b in adaptive_windows(x.shape[1], self.size)], axis=1)
        return ops.concatenate([ops.mean(x[:, :, a:b], axis=2, keepdims=True)
                                for a, b in adaptive_windows(x.shape[2], self.size)], axis=2)


class LocalResponseNorm(layers.Layer):
    """Keras has no LRN layer: ``b = a / (k + alpha / size * window sum of a**2) ** beta``
    over ``size`` neighbouring channels (NHWC: the last axis), zero-padded as PyTorch
    pads. (``tf.nn.local_response_normalization`` would need ``alpha / size`` and a
    radius: it does not divide by the window.)"""

    def __init__(self, lrn: LRN, **kwargs) -> None:
        super().__init__(name=lrn.name, **kwargs)
        self.lrn = lrn
        self.scale = lrn.alpha / lrn.size  # the translation point: per-element weight of the sum

    def call(self, x):
        n, channels = self.lrn.size, x.shape[-1]
        squares = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [n // 2, (n - 1) // 2]])
        window = sum(squares[..., i:i + channels] for i in range(n))
        return x / ops.power(self.lrn.k + self.scale * window, self.lrn.beta)


class BatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` keeping PyTorch's running variance. Keras folds the biased
    batch variance (the one it normalises with) into ``moving_variance``; PyTorch folds
    the unbiased one, n / (n - 1) times larger (n = N x H x W). At a 4 x 4 map and batch 2
    that is 3%, so the canonical checkpoint's statistics would drift apart in training."""

    record = False  # the training-parity check sets it: keep the last batch statistics

    def call(self, x, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(x, training=training, mask=mask)
        mean, var = ops.moments(x, axes=[0, 1, 2])
        n = float(np.prod(x.shape[:3]))
        keep = self.momentum  # Keras's momentum: the weight of the old statistic
        self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
        self.moving_variance.assign(self.moving_variance * keep + var * (n / (n - 1.0)) * (1.0 - keep))
        if self.record:
            self.batch_stats = (mean, var)
        return ops.batch_normalization(x, mean, var, axis=-1, offset=self.beta, scale=self.gamma,
                                       epsilon=self.epsilon)
