"""The layers of GoogLeNet's units in Keras 3, one maker per kind of op in the plan.

Mirrors ``impl_torch/layers.py`` and ``impl_mxnet/layers.py``: the same makers in the
same order. What Keras lacks is here, with PyTorch's semantics:

* pools with PyTorch's symmetric padding and ceil rounding (``Pool2D``): Keras pools
  ``"valid"`` or TensorFlow's ``"same"``, which pads asymmetrically at stride 2;
* the adaptive average pool of torchvision's aux heads (``AdaptiveAvgPool2D``);
* local response normalisation (``LocalResponseNorm``);
* BatchNorm with PyTorch's running variance (``BatchNorm``).

Keras layers are NHWC; every layer carries its canonical name, so the weight adapter is
a table. Layers are told their dtype when made (``dtype``): a Keras variable's dtype is
fixed when it is created, where PyTorch and Gluon cast a built model.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
from keras import layers, ops

from conformance.spec import LRN, AdaptiveAvgPool, ConvUnit, Op, Pool, PoolUnit, adaptive_windows, pool_out


def init() -> keras.initializers.Initializer:
    """Variables start at zero: ``build`` loads the suite's initial weights into them (the
    same in every framework), so Keras need not draw random numbers it would discard."""
    return keras.initializers.Zeros()


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
        return ops.batch_normalization(x, mean, var, axis=-1, offset=self.beta, scale=self.gamma, epsilon=self.epsilon)


class BasicConv2d(layers.Layer):
    """conv -> [BatchNorm] -> [ReLU], padded exactly as PyTorch pads: ``"same"`` would pad
    (2, 3) on the strided 7x7 conv at 224, PyTorch pads (3, 3), so the padding is explicit
    except where ``"same"`` is symmetric (stride 1, odd kernel)."""

    def __init__(self, u: ConvUnit, dtype=None) -> None:
        super().__init__(name=u.name, dtype=dtype)
        self.unit = u
        same = u.stride == 1 and 2 * u.padding == u.kernel - 1  # symmetric, so safe
        explicit = u.padding > 0 and not same
        self.pad = layers.ZeroPadding2D(u.padding, name=f"{u.name}.pad", dtype=dtype) if explicit else None
        self.conv = layers.Conv2D(
            u.out_channels,
            u.kernel,
            strides=u.stride,
            padding="same" if same and u.padding else "valid",
            use_bias=u.bias,
            kernel_initializer=init(),
            name=f"{u.name}.conv",
            dtype=dtype,
        )
        # momentum: the weight of the old statistic, 1 - the spec's (PyTorch's) 0.1
        self.bn = (
            None
            if u.norm is None
            else BatchNorm(epsilon=u.norm.eps, momentum=1.0 - u.norm.momentum, name=f"{u.name}.bn", dtype=dtype)
        )
        self.relu = u.relu

    def build(self, input_shape=None) -> None:
        """Weights from the spec's channel counts, as Gluon's ``in_channels``: no forward
        pass (Keras 3 would otherwise trace ``call`` at every level to find shapes)."""
        self.conv.build((None, None, None, self.unit.in_channels))
        if self.bn is not None:
            self.bn.build((None, None, None, self.unit.out_channels))

    def call(self, x, training=None):
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return ops.relu(x) if self.relu else x


class PlainConv2d(layers.Conv2D):
    """A bare conv, as Liu's lecture writes it (the layer carries the canonical name
    ``incep1.branch1x1``), with the ReLU its unit asks for. Its padding keeps the size
    (``"same"`` at stride 1 is symmetric) or is zero."""

    def __init__(self, u: ConvUnit, dtype=None) -> None:
        if u.padding and not (u.stride == 1 and 2 * u.padding == u.kernel - 1):
            raise ValueError(f"{u.name}: a plain conv pads to keep the size or not at all")
        super().__init__(
            u.out_channels,
            u.kernel,
            strides=u.stride,
            padding="same" if u.padding else "valid",
            use_bias=u.bias,
            activation="relu" if u.relu else None,
            kernel_initializer=init(),
            name=u.name,
            dtype=dtype,
        )
        self.unit = u

    def build(self, input_shape=None) -> None:
        super().build((None, None, None, self.unit.in_channels))


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
    """Max or average pool matching ``torch.nn.MaxPool2d`` / ``AvgPool2d``. It reads the
    static input size at call time and pads from ``conformance.spec``, so one model runs
    at any input size."""

    def __init__(self, pool: Pool, dtype=None) -> None:
        super().__init__(name=pool.name, dtype=dtype)
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
    """``torch.nn.AdaptiveAvgPool2d``: windows [floor(i*n/out), ceil((i+1)*n/out)), which
    overlap unevenly (14 -> 4: [0,4) [3,7) [7,11) [10,14)). Keras has no such layer."""

    def __init__(self, pool: AdaptiveAvgPool, dtype=None) -> None:
        super().__init__(name=pool.name, dtype=dtype)
        self.size = pool.size

    def call(self, x):
        # A rectangle's mean is the mean of its row means: pool rows, then columns.
        x = ops.concatenate(
            [ops.mean(x[:, a:b], axis=1, keepdims=True) for a, b in adaptive_windows(x.shape[1], self.size)], axis=1
        )
        return ops.concatenate(
            [ops.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in adaptive_windows(x.shape[2], self.size)], axis=2
        )


def make_pool(p: PoolUnit, dtype=None) -> layers.Layer:
    return Pool2D(p, dtype) if isinstance(p, Pool) else AdaptiveAvgPool2D(p, dtype)


class LocalResponseNorm(layers.Layer):
    """Keras has no LRN layer: ``b = a / (k + alpha / size * window sum of a**2) ** beta``
    over ``size`` neighbouring channels (NHWC: the last axis), zero-padded as PyTorch
    pads. (``tf.nn.local_response_normalization`` would need ``alpha / size`` and a
    radius: it does not divide by the window.)"""

    def __init__(self, lrn: LRN, dtype=None) -> None:
        super().__init__(name=lrn.name, dtype=dtype)
        self.lrn = lrn
        self.scale = lrn.alpha / lrn.size  # the translation point: per-element weight of the sum

    def call(self, x):
        n, channels = self.lrn.size, x.shape[-1]
        squares = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [n // 2, (n - 1) // 2]])
        window = sum(squares[..., i : i + channels] for i in range(n))
        return x / ops.power(self.lrn.k + self.scale * window, self.lrn.beta)


def make_lrn(lrn: LRN, dtype=None) -> layers.Layer:
    return LocalResponseNorm(lrn, dtype)


def make_relu(name: str, dtype=None) -> layers.Layer:
    return layers.ReLU(name=name, dtype=dtype)


def make_op(op: Op, dtype=None) -> layers.Layer:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op, dtype) if op.plain else BasicConv2d(op, dtype)
    return make_pool(op, dtype)


class Sequential(layers.Layer):
    """A numbered chain of ops (``branch2.0``, ``branch2.1``), like ``torch.nn.Sequential``;
    ``keras.Sequential`` is a model, and would not name its layers ``0``, ``1``."""

    def __init__(self, ops_: tuple[Op, ...], name: str, dtype=None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.ops = [make_op(op, dtype) for op in ops_]

    def build(self, input_shape=None) -> None:
        for op in self.ops:
            op.build(None)

    def call(self, x, training=None):
        for op in self.ops:
            x = op(x, training=training)
        return x


def make_chain(ops_: tuple[Op, ...], name: str, dtype=None) -> layers.Layer:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops_[0], dtype) if len(ops_) == 1 else Sequential(ops_, name, dtype)


# Keras keeps no public walk over nested layers: ``Layer._flatten_layers`` is what
# ``Model.layers`` and saving use. This is the suite's one call into it.
def walk(model: layers.Layer) -> Iterator[layers.Layer]:
    """Every layer in the model's tree, the model included."""
    return model._flatten_layers(include_self=True, recursive=True)


# Keras's SGD keeps its momentums in a list indexed as the variables it was built with
# (``SGD.momentums``, ``Optimizer._get_variable_index``), and each Dropout draws from its
# own ``SeedGenerator`` (``Dropout.seed_generator``), whose state is a variable. The
# trainer's state and reseeding go through these two functions.
def momentums(optimizer: keras.optimizers.Optimizer, variables: list) -> list[tuple]:
    """(variable, its momentum variable) for each of ``variables``; builds the optimizer
    if no step has yet (a resumed run sets the momentums before its first step)."""
    if not optimizer.built:
        optimizer.build(variables)
    moms = getattr(optimizer, "momentums", [])
    return [(v, moms[optimizer._get_variable_index(v)]) for v in variables] if moms else []


def reseed_dropout(model: layers.Layer, seed: int) -> None:
    """Give every Dropout's seed generator a state drawn from ``seed`` (and its place)."""
    droppers = [layer for layer in walk(model) if getattr(layer, "seed_generator", None) is not None]
    states = np.random.SeedSequence(seed).generate_state(len(droppers))
    for layer, state in zip(droppers, states, strict=True):
        generator = layer.seed_generator
        generator.state.assign(np.array([state, 0]).astype(generator.state.dtype))
