"""The layers of GoogLeNet's units in Keras 3, one maker per kind of op in the plan.

Mirrors ``impl_torch/layers.py`` and ``impl_mxnet/layers.py``: the same makers in the
same order. What Keras lacks is here, with PyTorch's semantics:

* pools with PyTorch's symmetric padding and ceil rounding (``Pool2D``): Keras pools
  ``"valid"`` or TensorFlow's ``"same"``, which pads asymmetrically at stride 2 (and
  is what TF-slim's units use: there Keras needs nothing of its own);
* the adaptive average pool of torchvision's aux heads (``AdaptiveAvgPool2D``);
* local response normalisation (``LocalResponseNorm``);
* BatchNorm with PyTorch's running variance (``BatchNorm``).

Keras layers are NHWC; every layer carries its canonical name, so the weight adapter is
a table. Layers are told their dtype when made (``dtype``): a Keras variable's dtype is
fixed when it is created, where PyTorch and Gluon cast a built model.

The network is a functional model whose input height and width are open, so the pools
pad from the input's size whether it is an int or, in a graph traced with open sizes, a
tensor (``length``); each layer states its output shape from the spec
(``compute_output_shape``, ``Block``), so wiring the graph traces no ``call``. The four
layers above are registered with Keras (``conformance>Pool2D``, ...) with their configs.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

import keras
import numpy as np
from keras import layers, ops

from conformance.spec import (
    LRN,
    AdaptiveAvgPool,
    ConvUnit,
    InceptionAuxUnit,
    Op,
    Pool,
    PoolUnit,
    Stage,
    adaptive_windows,
    op_chw,
    pool_out,
)

from .engine import all_reduce_sum, replica_id
from .weights import canonical_name, keras_name


def init() -> keras.initializers.Initializer:
    """Variables start at zero: ``build`` loads the suite's initial weights into them (the
    same in every framework), so Keras need not draw random numbers it would discard."""
    return keras.initializers.Zeros()


def output_shape(stages: tuple[Stage, ...] | InceptionAuxUnit, input_shape: tuple) -> tuple:
    """The NHWC shape after ``stages`` (or an aux head's logits), by the spec's arithmetic
    (``conformance.spec.op_chw``). Keras asks each layer for its output shape when it wires
    the functional graph; without ``compute_output_shape`` it would trace ``call`` to find
    it (about a second per model). An open H or W (None) stays open, except after an
    adaptive pool."""
    if isinstance(stages, InceptionAuxUnit):
        return (input_shape[0], stages.fc2.out_features)
    n, h, w, c = input_shape
    for stage in stages:
        c, h_out, w_out = op_chw(stage, (c, h or 1, w or 1))
        fixed = isinstance(stage, AdaptiveAvgPool)
        h, w = (h_out if h is not None or fixed else None), (w_out if w is not None or fixed else None)
    return (n, h, w, c)


class Block(layers.Layer):
    """A layer made from one unit of the plan (an Inception block, a residual block, an aux
    head), named by it, whose output shape is the spec's."""

    def __init__(self, unit: Stage | InceptionAuxUnit, dtype=None) -> None:
        super().__init__(name=keras_name(unit.name), dtype=dtype)
        self.unit = unit

    def compute_output_shape(self, input_shape) -> tuple:
        return output_shape(self.unit if isinstance(self.unit, InceptionAuxUnit) else (self.unit,), input_shape)


@keras.saving.register_keras_serializable(package="conformance")
class BatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` keeping PyTorch's running variance. Keras folds the biased
    batch variance (the one it normalises with) into ``moving_variance``; PyTorch folds
    the unbiased one, n / (n - 1) times larger (n = N x H x W). At a 4 x 4 map and batch 2
    that is 3%, so the canonical checkpoint's statistics would drift apart in training."""

    record = False  # engine.BatchStats sets it on each instance: keep the last batch statistics

    def call(self, x, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(x, training=training, mask=mask)
        # synchronized (Keras's own argument, set by impl_keras.distributed): the moments of
        # the global batch, all-reduced across tf.distribute replicas as Keras's _moments does
        mean, var = ops.moments(x, axes=[0, 1, 2], synchronized=self.synchronized)
        n = float(np.prod(x.shape[:3])) if None not in x.shape[:3] else ops.cast(ops.prod(ops.shape(x)[:3]), x.dtype)
        if self.synchronized:  # the unbiased correction counts the global batch (nn.SyncBatchNorm's)
            n = all_reduce_sum(ops.convert_to_tensor(n, x.dtype))
        keep = self.momentum  # Keras's momentum: the weight of the old statistic
        # Keras creates moving_mean/variance with aggregation "none": under tf.distribute,
        # an assign in replica context updates that replica's own copy (impl_keras.distributed)
        self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
        self.moving_variance.assign(self.moving_variance * keep + var * (n / (n - 1.0)) * (1.0 - keep))
        if self.record:
            self.batch_stats = (mean, var)
            # under tf.distribute each replica traces this call: keep each one's own
            self.replica_stats[replica_id()] = (mean, var)
        return ops.batch_normalization(x, mean, var, axis=-1, offset=self.beta, scale=self.gamma, epsilon=self.epsilon)

    @property
    def replica_stats(self) -> dict:
        """The last batch statistics of each tf.distribute replica (record), by replica id."""
        if "_replica_stats" not in self.__dict__:
            object.__setattr__(self, "_replica_stats", {})  # plain dict: tensors, nothing to track
        return self.__dict__["_replica_stats"]


def keeps_size(kernel: int, stride: int, padding: int) -> bool:
    """Whether PyTorch's padding keeps the map's size, as Keras's ``"same"`` does: at
    stride 1 an odd kernel padded by half of it on each side, where ``"same"`` is
    symmetric too."""
    return stride == 1 and 2 * padding == kernel - 1


class BasicConv2d(layers.Layer):
    """conv -> [BatchNorm] -> [ReLU], padded exactly as PyTorch pads: ``"same"`` would pad
    (2, 3) on the strided 7x7 conv at 224, PyTorch pads (3, 3), so the padding is explicit
    except where ``"same"`` is symmetric (stride 1, odd kernel)."""

    def __init__(self, unit: ConvUnit, dtype=None) -> None:
        super().__init__(name=keras_name(unit.name), dtype=dtype)
        self.unit = unit
        # TensorFlow's SAME (TF-slim's units) is Keras's own "same", asymmetric at stride 2
        same = unit.same or keeps_size(unit.kernel, unit.stride, unit.padding)
        explicit = unit.padding > 0 and not same
        self.pad = (
            layers.ZeroPadding2D(unit.padding, name=keras_name(f"{unit.name}.pad"), dtype=dtype) if explicit else None
        )
        self.conv = layers.Conv2D(
            unit.out_channels,
            unit.kernel,
            strides=unit.stride,
            padding="same" if same and (unit.padding or unit.same) else "valid",
            use_bias=unit.bias,
            kernel_initializer=init(),
            name=keras_name(f"{unit.name}.conv"),
            dtype=dtype,
        )
        # momentum: the weight of the old statistic, 1 - the spec's (PyTorch's) 0.1
        self.bn = (
            None
            if unit.norm is None
            else BatchNorm(
                epsilon=unit.norm.eps,
                momentum=1.0 - unit.norm.momentum,
                scale=unit.norm.scale,  # TF-slim's has no gamma: Keras's scale=False is TensorFlow's own
                name=keras_name(f"{unit.name}.bn"),
                dtype=dtype,
            )
        )
        self.relu = unit.relu

    def build(self, input_shape=None) -> None:
        """Weights from the spec's channel counts, as Gluon's ``in_channels``: no forward
        pass (Keras 3 would otherwise trace ``call`` at every level to find shapes)."""
        self.conv.build((None, None, None, self.unit.in_channels))
        if self.bn is not None:
            self.bn.build((None, None, None, self.unit.out_channels))

    def compute_output_shape(self, input_shape) -> tuple:
        return output_shape((self.unit,), input_shape)

    def call(self, x, training=None):
        if self.pad is not None:
            x = self.pad(x)
        if self.bn is not None and not training and _FAST.get():
            kernel, bias = fold_batchnorm(self.conv, self.bn)
            x = self.conv.convolution_op(x, kernel) + bias
        else:
            x = self.conv(x)
            if self.bn is not None:
                x = self.bn(x, training=training)
        return ops.relu(x) if self.relu else x


# Set while a fast mode traces its graph (``fast_graph``): each BasicConv2d in inference
# then runs one conv with its BatchNorm folded in, the pass over every map that
# BatchNorm's scale and shift made is gone, and TensorFlow's Grappler fuses the conv, the
# bias and the ReLU into one oneDNN convolution (_FusedConv2D); and a max pool of open
# size decides at each call whether Keras's "same" pool is PyTorch's (``Pool2D``). A
# context, not an argument: the blocks between the model and its layers pass only
# ``training`` down.
_FAST = contextvars.ContextVar("fast_graph", default=False)


@contextlib.contextmanager
def fast_graph() -> Iterator[None]:
    """Within it, a BasicConv2d called in inference runs its conv and BatchNorm as one
    conv (``fold_batchnorm``), and a max pool of open size chooses its padding at run
    time. The model is unchanged: this is how the suite's fast graph is traced; what a
    model exports (a SavedModel, ONNX) keeps the plain layers."""
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def fold_batchnorm(conv: layers.Conv2D, bn: BatchNorm) -> tuple:
    """The conv's kernel times gamma / sqrt(var + eps) and its bias beta + (bias - mean) *
    gamma / sqrt(var + eps), as ONNX Runtime's and oneDNN's inference graphs fold them.
    Computed from the variables in the graph, so it runs at every call and weights
    assigned later are the ones folded. The per-channel terms are float64, rounded once;
    the kernel's product is in the kernel's dtype (one more rounding of the scale): a
    float64 copy of every kernel at every call is the slower fold (docs/benchmarks.md has
    the figures)."""
    wide = "float64"
    var = ops.cast(bn.moving_variance, wide)
    gamma = ops.ones_like(var) if bn.gamma is None else ops.cast(bn.gamma, wide)
    beta = ops.zeros_like(var) if bn.beta is None else ops.cast(bn.beta, wide)
    bias = ops.zeros_like(var) if conv.bias is None else ops.cast(conv.bias, wide)
    scale = gamma / ops.sqrt(var + bn.epsilon)
    dtype = conv.kernel.dtype
    kernel = conv.kernel * ops.cast(scale, dtype)  # HWIO: the scale broadcasts over output channels, last
    return kernel, ops.cast(beta + (bias - ops.cast(bn.moving_mean, wide)) * scale, dtype)


class PlainConv2d(layers.Conv2D):
    """A bare conv, as Liu's lecture writes it (the layer carries the canonical name
    ``incep1.branch1x1``), with the ReLU its unit asks for. Its padding keeps the size
    (``"same"`` at stride 1 is symmetric) or is zero."""

    def __init__(self, unit: ConvUnit, dtype=None) -> None:
        if unit.padding and not keeps_size(unit.kernel, unit.stride, unit.padding):
            raise ValueError(f"{unit.name}: a plain conv pads to keep the size or not at all")
        super().__init__(
            unit.out_channels,
            unit.kernel,
            strides=unit.stride,
            padding="same" if unit.padding else "valid",
            use_bias=unit.bias,
            activation="relu" if unit.relu else None,
            kernel_initializer=init(),
            name=keras_name(unit.name),
            dtype=dtype,
        )
        self.unit = unit

    def build(self, input_shape=None) -> None:
        super().build((None, None, None, self.unit.in_channels))


def length(x, axis: int):
    """The size of one axis: an int where the shape is known, else a scalar tensor (the
    model's Input leaves H and W open, so one graph runs at any input size)."""
    n = x.shape[axis]
    return n if n is not None else ops.shape(x)[axis]


def _pool_out(size, pool: Pool):
    """PyTorch's output size along one axis: ``conformance.spec.pool_out`` for an int, the
    same arithmetic on a scalar tensor."""
    if isinstance(size, int):
        return pool_out(size, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)
    span = size + 2 * pool.padding - pool.kernel
    if not pool.ceil_mode:
        return span // pool.stride + 1
    out = -(-span // pool.stride) + 1
    return out - ops.cast(
        (out - 1) * pool.stride >= size + pool.padding, out.dtype
    )  # no window starting in the padding


def _pads(size, pool: Pool) -> tuple:
    """(before, after) padding that makes a valid pool give PyTorch's output size: the
    ceil mode's extra window is padded at the end only."""
    after = (_pool_out(size, pool) - 1) * pool.stride + pool.kernel - size - pool.padding
    return pool.padding, max(0, after) if isinstance(after, int) else ops.maximum(after, 0)


def _same_as_torch(size, pool: Pool):
    """Whether Keras's ``"same"`` pads this axis as PyTorch's pool does (the same output
    size, the same cells before and after): a bool for an int size, else a tensor. A
    stride-2 ceil-mode pool of 3 fits at every even size (one cell after)."""
    out = -(-size // pool.stride)
    total = (out - 1) * pool.stride + pool.kernel - size
    total = max(0, total) if isinstance(total, int) else ops.maximum(total, 0)
    before, after = _pads(size, pool)
    fits = (out == _pool_out(size, pool), total // 2 == before, total - total // 2 == after)
    return all(fits) if isinstance(size, int) else ops.all(ops.stack(fits))


def _max_valid(x, pool: Pool):
    """PyTorch's max pool as a valid pool of the map padded with -inf: a padded cell must
    never win the max (a zero would beat negatives)."""
    (top, bottom), (left, right) = _pads(length(x, 1), pool), _pads(length(x, 2), pool)
    if not all(isinstance(n, int) for n in (bottom, right)) or top or bottom or left or right:
        x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=-np.inf)
    return ops.max_pool(x, pool.kernel, pool.stride, padding="valid")


def _avg_divisor(size, pool: Pool):
    """Cells counted in each window's mean, along one axis, as PyTorch counts them:
    padding counts if ``count_include_pad``, the ceil mode's extra end never does.
    numpy for an int size, ``keras.ops`` (the same functions) for a tensor."""
    xp = np if isinstance(size, int) else ops
    start = xp.arange(_pool_out(size, pool)) * pool.stride - pool.padding
    end = xp.minimum(start + pool.kernel, size + pool.padding)
    if not pool.count_include_pad:
        start, end = xp.maximum(start, 0), xp.minimum(end, size)
    return end - start


@keras.saving.register_keras_serializable(package="conformance")
class Pool2D(layers.Layer):
    """Max or average pool matching ``torch.nn.MaxPool2d`` / ``AvgPool2d``. It pads from
    the input's size (known, or a tensor when the model's input size is open), so one
    model runs at any input size."""

    def __init__(self, pool: Pool, dtype=None, **kwargs) -> None:
        super().__init__(name=keras_name(pool.name), dtype=dtype, **kwargs)
        self.pool = pool

    def get_config(self) -> dict:
        return {**super().get_config(), "pool": dataclasses.asdict(self.pool)}

    @classmethod
    def from_config(cls, config: dict) -> Pool2D:
        config = {k: v for k, v in config.items() if k != "name"}  # the pool's own name
        return cls(Pool(**config.pop("pool")), **config)

    def compute_output_shape(self, input_shape) -> tuple:
        return output_shape((self.pool,), input_shape)

    def call(self, x):
        p = self.pool
        # TensorFlow's SAME: Keras's own padding="same", where padded cells never win. A max
        # pool of stride 1 padded to keep the size (each Inception's pool branch) is the
        # same pool: no -inf copy of the map to make first.
        if p.same or (p.kind == "max" and keeps_size(p.kernel, p.stride, p.padding)):
            return ops.max_pool(x, p.kernel, p.stride, padding="same")
        h, w = length(x, 1), length(x, 2)
        static = isinstance(h, int) and isinstance(w, int)
        if p.kind == "max":
            # Where "same" pads as PyTorch does, it is the same pool without a padded copy
            # of the map. The fast graph for any size decides at each call; an exported
            # graph keeps one path (a conditional's branches, lowered, leave tensors
            # without values to whoever reads the graph's internals, as verify does).
            if not static and not _FAST.get():
                return _max_valid(x, p)
            fits = (_same_as_torch(h, p), _same_as_torch(w, p))

            def same():
                return ops.max_pool(x, p.kernel, p.stride, padding="same")

            if static:
                return same() if all(fits) else _max_valid(x, p)
            return ops.cond(ops.logical_and(*fits), same, lambda: _max_valid(x, p))
        (top, bottom), (left, right) = _pads(h, p), _pads(w, p)
        padded = not static or bool(top or bottom or left or right)
        rows, cols = _avg_divisor(h, p), _avg_divisor(w, p)
        if padded:
            x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        y = ops.average_pool(x, p.kernel, p.stride, padding="valid")  # divides by kernel**2
        if static:
            correction = p.kernel * p.kernel / np.outer(rows, cols)
            if np.all(correction == 1.0):
                return y
        else:
            correction = p.kernel * p.kernel / ops.cast(ops.outer(rows, cols), y.dtype)
        return y * ops.cast(correction[None, :, :, None], y.dtype)


@keras.saving.register_keras_serializable(package="conformance")
class AdaptiveAvgPool2D(layers.Layer):
    """``torch.nn.AdaptiveAvgPool2d``: windows [floor(i*n/out), ceil((i+1)*n/out)), which
    overlap unevenly (14 -> 4: [0,4) [3,7) [7,11) [10,14)). Keras has no such layer."""

    def __init__(self, pool: AdaptiveAvgPool, dtype=None, **kwargs) -> None:
        super().__init__(name=keras_name(pool.name), dtype=dtype, **kwargs)
        self.size = pool.size

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}

    @classmethod
    def from_config(cls, config: dict) -> AdaptiveAvgPool2D:
        config = dict(config)
        return cls(AdaptiveAvgPool(canonical_name(config.pop("name")), config.pop("size")), **config)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], self.size, self.size, input_shape[3])

    def call(self, x):
        # A rectangle's mean is the mean of its row means: pool rows, then columns. The
        # window bounds are ints, or tensors when the input size is open.
        x = ops.concatenate(
            [ops.mean(x[:, a:b], axis=1, keepdims=True) for a, b in adaptive_windows(length(x, 1), self.size)], axis=1
        )
        return ops.concatenate(
            [ops.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in adaptive_windows(length(x, 2), self.size)],
            axis=2,
        )


def make_pool(pool: PoolUnit, dtype=None) -> layers.Layer:
    return Pool2D(pool, dtype) if isinstance(pool, Pool) else AdaptiveAvgPool2D(pool, dtype)


@keras.saving.register_keras_serializable(package="conformance")
class LocalResponseNorm(layers.Layer):
    """Keras has no LRN layer: ``b = a / (k + alpha / size * window sum of a**2) ** beta``
    over ``size`` neighbouring channels (NHWC: the last axis), zero-padded as PyTorch
    pads. (``tf.nn.local_response_normalization`` would need ``alpha / size`` and a
    radius: it does not divide by the window.)"""

    def __init__(self, lrn: LRN, dtype=None, **kwargs) -> None:
        super().__init__(name=keras_name(lrn.name), dtype=dtype, **kwargs)
        self.lrn = lrn
        self.scale = lrn.alpha / lrn.size  # the translation point: per-element weight of the sum

    def get_config(self) -> dict:
        return {**super().get_config(), "lrn": dataclasses.asdict(self.lrn)}

    @classmethod
    def from_config(cls, config: dict) -> LocalResponseNorm:
        config = {k: v for k, v in config.items() if k != "name"}  # the LRN's own name
        return cls(LRN(**config.pop("lrn")), **config)

    def compute_output_shape(self, input_shape) -> tuple:
        return input_shape

    def call(self, x):
        n, channels = self.lrn.size, x.shape[-1]
        squares = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [n // 2, (n - 1) // 2]])
        window = sum(squares[..., i : i + channels] for i in range(n))
        return x / ops.power(self.lrn.k + self.scale * window, self.lrn.beta)


def make_lrn(lrn: LRN, dtype=None) -> layers.Layer:
    return LocalResponseNorm(lrn, dtype)


def make_relu(name: str, dtype=None) -> layers.Layer:
    return layers.ReLU(name=keras_name(name), dtype=dtype)


def make_op(op: Op, dtype=None) -> layers.Layer:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op, dtype) if op.plain else BasicConv2d(op, dtype)
    return make_pool(op, dtype)


class Sequential(layers.Layer):
    """A numbered chain of ops (``branch2.0``, ``branch2.1``), like ``torch.nn.Sequential``;
    ``keras.Sequential`` is a model, and would not name its layers ``0``, ``1``."""

    def __init__(self, ops_: tuple[Op, ...], name: str, dtype=None) -> None:
        super().__init__(name=keras_name(name), dtype=dtype)
        self.chain = ops_
        self.ops = [make_op(op, dtype) for op in ops_]

    def build(self, input_shape=None) -> None:
        for op in self.ops:
            op.build(None)

    def compute_output_shape(self, input_shape) -> tuple:
        return output_shape(self.chain, input_shape)

    def call(self, x, training=None):
        for op in self.ops:
            x = op(x, training=training)
        return x


def make_chain(ops_: tuple[Op, ...], name: str, dtype=None) -> layers.Layer:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops_[0], dtype) if len(ops_) == 1 else Sequential(ops_, name, dtype)
