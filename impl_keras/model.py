"""GoogLeNet in Keras 3, built from a ``conformance.spec`` plan.

Mirrors ``impl_torch/model.py`` block for block. What differs, and why:

* Layout is NHWC (channels last): TensorFlow's CPU kernels want it. Shape comments
  read ``N x H x W x C``; concatenation is on the last axis.
* Every weight-carrying layer is named with its canonical prefix
  (``inception3a.branch2.1.conv``), so the weight adapter is a table, not a pairing
  by order. Nested Keras layers do not prefix names, so full names are passed.
* Padding: PyTorch's ``padding=3`` on the strided 7x7 conv pads (3, 3); Keras
  ``"same"`` would pad (2, 3) at 224. Same shape, shifted values. Explicit
  ``ZeroPadding2D`` reproduces PyTorch; ``"same"`` is used only where it is
  symmetric (stride 1, odd kernel).
* Pools follow PyTorch's ceil rounding through ``layers.Pool2D``; the adaptive aux
  pool has no Keras layer (``layers.AdaptiveAvgPool2D``).
* BatchNorm momentum is the weight of the *old* statistic: 1 - PyTorch's momentum; and
  its moving variance keeps the biased batch variance, PyTorch's the unbiased one
  (``layers.BatchNorm`` keeps PyTorch's).
* ``Flatten`` reads NHWC in (H, W, C) order; the weight adapter permutes fc1's rows.
* Keras infers input channels when a layer is built; each block's ``build`` passes
  them from the spec (as Gluon's ``in_channels``), so no dummy forward pass runs.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from conformance.spec import (
    LRN,
    AdaptiveAvgPool,
    AuxUnit,
    ConvUnit,
    InceptionBlock,
    Op,
    Plan,
    Pool,
    ReLU,
    ResidualUnit,
    Stage,
    configure,
    plan,
)

from .layers import AdaptiveAvgPool2D, BatchNorm, LocalResponseNorm, Pool2D


def init() -> keras.initializers.Initializer:
    """torchvision's initialisation of conv and linear weights (a new instance per layer:
    Keras warns when one unseeded initializer is shared)."""
    return keras.initializers.TruncatedNormal(stddev=0.01)


def local(name: str) -> str:
    """An op's attribute name inside its block: ``incep1.branch5x5_1`` -> ``branch5x5_1``."""
    return name.rsplit(".", 1)[-1]


class BasicConv2d(layers.Layer):
    """conv -> [BatchNorm] -> [ReLU], padded exactly as PyTorch pads."""

    def __init__(self, u: ConvUnit) -> None:
        super().__init__(name=u.name)
        self.unit = u
        same = u.stride == 1 and 2 * u.padding == u.kernel - 1  # symmetric, so safe
        explicit = u.padding > 0 and not same
        self.pad = layers.ZeroPadding2D(u.padding, name=f"{u.name}.pad") if explicit else None
        self.conv = layers.Conv2D(u.out_channels, u.kernel, strides=u.stride,
                                  padding="same" if same and u.padding else "valid",
                                  use_bias=u.bias, kernel_initializer=init(), name=f"{u.name}.conv")
        self.bn = None if u.norm is None else BatchNorm(
            epsilon=u.norm.eps, momentum=1.0 - u.norm.momentum, name=f"{u.name}.bn")
        self.relu = layers.ReLU() if u.relu else None

    def build(self, input_shape=None) -> None:
        """Weights from the spec's channel counts, as Gluon's ``in_channels``: no forward
        pass (Keras 3 would otherwise trace ``call`` at every level to find shapes)."""
        self.conv.build((None, None, None, self.unit.in_channels))
        if self.bn is not None:
            self.bn.build((None, None, None, self.unit.out_channels))

    def call(self, x):
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.relu is None else self.relu(x)


class PlainConv2d(layers.Conv2D):
    """A bare conv, as the lecture nets write it (the layer carries the canonical name
    ``incep1.branch1x1``), with the ReLU its unit asks for. Their padding keeps the size
    (``"same"`` at stride 1 is symmetric) or is zero."""

    def __init__(self, u: ConvUnit) -> None:
        if u.padding and not (u.stride == 1 and 2 * u.padding == u.kernel - 1):
            raise ValueError(f"{u.name}: a plain conv pads to keep the size or not at all")
        super().__init__(u.out_channels, u.kernel, strides=u.stride, padding="same" if u.padding else "valid",
                         use_bias=u.bias, activation="relu" if u.relu else None,
                         kernel_initializer=init(), name=u.name)
        self.unit = u

    def build(self, input_shape=None) -> None:
        super().build((None, None, None, self.unit.in_channels))


def make_pool(p: Pool | AdaptiveAvgPool) -> layers.Layer:
    return AdaptiveAvgPool2D(p) if isinstance(p, AdaptiveAvgPool) else Pool2D(p)


def make_op(op: Op) -> layers.Layer:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op) if op.plain else BasicConv2d(op)
    return make_pool(op)


class Sequential(layers.Layer):
    """A numbered chain of ops (``branch2.0``, ``branch2.1``), like ``nn.Sequential``."""

    def __init__(self, ops_: tuple[Op, ...], name: str) -> None:
        super().__init__(name=name)
        self.ops = [make_op(op) for op in ops_]

    def build(self, input_shape=None) -> None:
        for op in self.ops:
            op.build(None)

    def call(self, x):
        for op in self.ops:
            x = op(x)
        return x


def make_branch(ops_: tuple[Op, ...], name: str) -> layers.Layer:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops_[0]) if len(ops_) == 1 else Sequential(ops_, name)


class Inception(layers.Layer):
    def __init__(self, block: InceptionBlock) -> None:
        super().__init__(name=block.name)
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branch1, self.branch2, self.branch3, self.branch4 = (
            make_branch(ops_, f"{block.name}.branch{i}") for i, ops_ in enumerate(block.branches, 1))

    def build(self, input_shape=None) -> None:
        for branch in (self.branch1, self.branch2, self.branch3, self.branch4):
            branch.build(None)

    def call(self, x):
        # N x 28 x 28 x 192 (inception3a)
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        # N x 28 x 28 x (64 + 128 + 32 + 32): concatenated on the channel axis, last here
        return ops.concatenate(branches, axis=-1)


class InceptionA(layers.Layer):
    """The lecture's Inception block: its ops are attributes named as the post names them."""

    def __init__(self, block: InceptionBlock) -> None:
        super().__init__(name=block.name)
        # 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, no ReLU anywhere
        self.branches = [[local(op.name) for op in branch] for branch in block.branches]
        for branch in block.branches:
            for op in branch:
                setattr(self, local(op.name), make_op(op))

    def build(self, input_shape=None) -> None:
        for branch in self.branches:
            for name in branch:
                getattr(self, name).build(None)

    def call(self, x):
        # N x 12 x 12 x 10 (incep1)
        outputs = []
        for branch in self.branches:
            y = x
            for name in branch:
                y = getattr(self, name)(y)
            outputs.append(y)
        # N x 12 x 12 x (16 + 24 + 24 + 24): concatenated on the channel axis, last here
        return ops.concatenate(outputs, axis=-1)


class ResidualBlock(layers.Layer):
    def __init__(self, block: ResidualUnit) -> None:
        super().__init__(name=block.name)
        self.conv1 = make_op(block.conv1)  # with its ReLU
        self.conv2 = make_op(block.conv2)  # without

    def build(self, input_shape=None) -> None:
        self.conv1.build(None)
        self.conv2.build(None)

    def call(self, x):
        # N x 12 x 12 x 16 (rblock1)
        return ops.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(layers.Layer):
    def __init__(self, head: AuxUnit) -> None:
        super().__init__(name=head.name)
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv)
        self.flatten = layers.Flatten()
        self.fc1 = layers.Dense(head.fc1.out_features, kernel_initializer=init(), name=head.fc1.name)
        self.fc2 = layers.Dense(head.fc2.out_features, kernel_initializer=init(), name=head.fc2.name)
        self.dropout = layers.Dropout(head.dropout)
        self.head = head

    def build(self, input_shape=None) -> None:
        self.conv.build(None)
        self.fc1.build((None, self.head.fc1.in_features))
        self.fc2.build((None, self.head.fc2.in_features))

    def call(self, x):
        # aux1: N x 14 x 14 x 512, aux2: N x 14 x 14 x 528
        x = self.pool(x)
        # aux1: N x 4 x 4 x 512, aux2: N x 4 x 4 x 528
        x = self.conv(x)
        # N x 4 x 4 x 128
        x = self.flatten(x)
        # N x 2048, in (H, W, C) order: fc1's rows are permuted when porting
        x = ops.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        return self.fc2(x)
        # N x 1000 (num_classes)


def make_stage(stage: Stage) -> layers.Layer:
    if isinstance(stage, LRN):
        return LocalResponseNorm(stage)
    if isinstance(stage, ReLU):
        return layers.ReLU(name=stage.name)
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage)
    if isinstance(stage, InceptionBlock):
        return InceptionA(stage) if stage.flat else Inception(stage)
    return make_op(stage)


@keras.saving.register_keras_serializable(package="conformance")
class GoogLeNet(keras.Model):
    def __init__(self, plan: Plan, **kwargs) -> None:
        super().__init__(name=plan.variant.name, **kwargs)
        self.plan = plan
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            setattr(self, stage.name, make_stage(stage))
        for head in plan.aux:  # aux1, aux2
            setattr(self, head.name, InceptionAux(head))
        # global average (a fixed 7x7 in GluonCV; none in the lecture nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.flatten = layers.Flatten()
        self.dropout = layers.Dropout(plan.dropout)
        setattr(self, plan.fc.name, layers.Dense(plan.fc.out_features, kernel_initializer=init(),
                                                 name=plan.fc.name))  # fc (l: lecture)

    def get_config(self) -> dict:
        """The variant and its options: enough to rebuild the model (``.keras`` files)."""
        return {"variant": self.plan.variant.name, **self.plan.variant.options}

    @classmethod
    def from_config(cls, config: dict) -> "GoogLeNet":
        config = {k: v for k, v in config.items() if k not in ("name", "trainable", "dtype")}
        return cls(plan(configure(config.pop("variant"), **config)))

    def build(self, input_shape=None) -> None:
        """Create every weight, aux heads included, from the spec's channel counts."""
        for stage in self.plan.stages:
            getattr(self, stage.name).build(None)
        for head in self.plan.aux:
            getattr(self, head.name).build(None)
        getattr(self, self.plan.fc.name).build((None, self.plan.fc.in_features))

    def forward_stages(self, x, with_aux: bool = False, training: bool = False) -> dict:
        """Every stage's output by name (NHWC), then ``flatten``, ``logits`` and the aux logits."""
        out = {}
        if self.plan.transform is not None:  # torchvision's transform_input, channel by channel
            t = self.plan.transform
            x = ops.concatenate([x[..., c:c + 1] * s + b for c, (s, b) in enumerate(zip(t.scale, t.shift))],
                                axis=-1)
        # N x 224 x 224 x 3
        for stage in self.plan.stages:
            x = getattr(self, stage.name)(x, training=training)
            # conv1: N x 112 x 112 x 64 ... inception5b: N x 7 x 7 x 1024 (spec table)
            out[stage.name] = x
            for head in self.plan.aux_for(stage.name) if with_aux else ():
                out[head.name] = getattr(self, head.name)(x, training=training)
        if self.avgpool is not None:
            x = self.avgpool(x)
            # N x 1 x 1 x 1024
        x = self.flatten(x)
        # N x 1024, or the whole last map in (H, W, C) order: N x 1408 (inception_mnist),
        # so the weight adapter permutes fc's rows
        out["flatten"] = x
        x = self.dropout(x, training=training)
        out["logits"] = getattr(self, self.plan.fc.name)(x)
        # N x 1000 (num_classes)
        return out

    def call(self, x, training: bool = False):
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = bool(training) and bool(self.plan.aux)
        out = self.forward_stages(x, with_aux=training_aux, training=training)
        if training_aux:
            return (out["logits"], *(out[head.name] for head in reversed(self.plan.aux)))
        return out["logits"]
