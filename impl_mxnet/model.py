"""GoogLeNet in MXNet Gluon, built from a ``conformance.spec`` plan.

Mirrors ``impl_torch/model.py`` block for block. What differs, and why:

* ``hybrid_forward(F, x)``: ``F`` is ``mx.nd`` when run imperatively and ``mx.sym``
  once hybridized, so every op goes through ``F``.
* Layers are told their ``in_channels`` (from the spec) so parameters exist right
  after ``initialize()``, without a first forward.
* BatchNorm calls its scale and shift ``gamma``/``beta``, and its momentum is the
  weight of the *old* statistic: 1 - PyTorch's momentum. Its running variance keeps the
  biased batch variance, PyTorch's the unbiased one (``BatchNorm`` keeps PyTorch's).
* ``save_parameters`` names parameters by attribute path (``conv1.conv.weight``),
  the same tree as torchvision's state_dict.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

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
)


def local(name: str) -> str:
    """An op's attribute name inside its block: ``incep1.branch5x5_1`` -> ``branch5x5_1``."""
    return name.rsplit(".", 1)[-1]


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` keeping PyTorch's running variance. MXNet folds the biased batch
    variance (the one it normalises with) into ``running_var``; PyTorch folds the unbiased
    one, n / (n - 1) times larger (n = N x H x W). In training the operator runs with its
    own update switched off (momentum 1) and the statistics are updated here."""

    record = False  # the training-parity check sets it: keep the last batch statistics

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if not mx.autograd.is_training():
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        keep = self._kwargs["momentum"]  # Gluon's momentum: the weight of the old statistic
        y = F.BatchNorm(x, gamma, beta, running_mean, running_var, name="fwd", **{**self._kwargs, "momentum": 1.0})
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
        self.conv = nn.Conv2D(u.out_channels, u.kernel, strides=u.stride, padding=u.padding,
                              use_bias=u.bias, in_channels=u.in_channels)
        self.bn = None if u.norm is None else BatchNorm(
            epsilon=u.norm.eps, momentum=1.0 - u.norm.momentum, in_channels=u.out_channels)
        self.relu = nn.Activation("relu") if u.relu else None

    def hybrid_forward(self, F, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.relu is None else self.relu(x)


def plain_conv(u: ConvUnit) -> nn.Conv2D:
    """A bare conv, as the lecture nets write it (``incep1.branch1x1.weight``), with the
    ReLU its unit asks for."""
    return nn.Conv2D(u.out_channels, u.kernel, strides=u.stride, padding=u.padding, use_bias=u.bias,
                     activation="relu" if u.relu else None, in_channels=u.in_channels)


class AdaptiveAvgPool2D(nn.HybridBlock):
    """``torch.nn.AdaptiveAvgPool2d``: Gluon has it only as a contrib operator."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def hybrid_forward(self, F, x):
        return F.contrib.AdaptiveAvgPooling2D(x, output_size=self.size)


class LocalResponseNorm(nn.HybridBlock):
    """Gluon has no LRN block, only the operator; it divides alpha by nsize, as the spec."""

    def __init__(self, lrn: LRN) -> None:
        super().__init__()
        self.lrn = lrn

    def hybrid_forward(self, F, x):
        lrn = self.lrn
        if x.dtype == np.float32:
            return F.LRN(x, alpha=lrn.alpha, beta=lrn.beta, knorm=lrn.k, nsize=lrn.size)
        # float64 (the training-parity check): MXNet's LRN kernel is float32 only. The window
        # sum as a 1x1 convolution with a band of ones, PyTorch's window [c - 2, c + 2].
        c = np.arange(x.shape[1])
        band = (c[None, :] >= c[:, None] - lrn.size // 2) & (c[None, :] <= c[:, None] + (lrn.size - 1) // 2)
        weight = mx.nd.array(band[:, :, None, None], dtype=x.dtype)
        window = F.Convolution(F.square(x), weight, kernel=(1, 1), num_filter=len(c), no_bias=True)
        return x / F.power(lrn.k + lrn.alpha / lrn.size * window, lrn.beta)


def make_pool(p: Pool | AdaptiveAvgPool) -> nn.HybridBlock:
    if isinstance(p, AdaptiveAvgPool):
        return AdaptiveAvgPool2D(p.size)
    if p.kind == "max":  # ceil_mode is MXNet's pooling_convention="full"
        return nn.MaxPool2D(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
    return nn.AvgPool2D(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode,
                        count_include_pad=p.count_include_pad)


def make_op(op: Op) -> nn.HybridBlock:
    if isinstance(op, ConvUnit):
        return plain_conv(op) if op.plain else BasicConv2d(op)
    return make_pool(op)


def make_branch(ops: tuple[Op, ...]) -> nn.HybridBlock:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    if len(ops) == 1:
        return make_op(ops[0])
    chain = nn.HybridSequential()
    chain.add(*map(make_op, ops))
    return chain


class Inception(nn.HybridBlock):
    def __init__(self, block: InceptionBlock) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branch1, self.branch2, self.branch3, self.branch4 = map(make_branch, block.branches)

    def hybrid_forward(self, F, x):
        # N x 192 x 28 x 28 (inception3a)
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        # N x (64 + 128 + 32 + 32) x 28 x 28: concatenated on the channel axis
        return F.concat(*branches, dim=1)


class InceptionA(nn.HybridBlock):
    """The lecture's Inception block: its ops are attributes named as the post names them."""

    def __init__(self, block: InceptionBlock) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, no ReLU anywhere
        self.branches = [[local(op.name) for op in branch] for branch in block.branches]
        for branch in block.branches:
            for op in branch:
                setattr(self, local(op.name), make_op(op))

    def hybrid_forward(self, F, x):
        # N x 10 x 12 x 12 (incep1)
        outputs = []
        for branch in self.branches:
            y = x
            for name in branch:
                y = getattr(self, name)(y)
            outputs.append(y)
        # N x (16 + 24 + 24 + 24) x 12 x 12
        return F.concat(*outputs, dim=1)


class ResidualBlock(nn.HybridBlock):
    def __init__(self, block: ResidualUnit) -> None:
        super().__init__()
        self.conv1 = make_op(block.conv1)  # with its ReLU
        self.conv2 = make_op(block.conv2)  # without

    def hybrid_forward(self, F, x):
        # N x 16 x 12 x 12 (rblock1)
        return F.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(nn.HybridBlock):
    def __init__(self, head: AuxUnit) -> None:
        super().__init__()
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv)
        self.fc1 = nn.Dense(head.fc1.out_features, in_units=head.fc1.in_features)
        self.fc2 = nn.Dense(head.fc2.out_features, in_units=head.fc2.in_features)
        self.dropout = nn.Dropout(head.dropout)

    def hybrid_forward(self, F, x):
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = F.flatten(x)
        # N x 2048, in (C, H, W) order, as PyTorch
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        return self.fc2(x)
        # N x 1000 (num_classes)


def make_stage(stage: Stage) -> nn.HybridBlock:
    if isinstance(stage, LRN):
        return LocalResponseNorm(stage)
    if isinstance(stage, ReLU):
        return nn.Activation("relu")
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage)
    if isinstance(stage, InceptionBlock):
        return InceptionA(stage) if stage.flat else Inception(stage)
    return make_op(stage)


class GoogLeNet(nn.HybridBlock):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            setattr(self, stage.name, make_stage(stage))
        for head in plan.aux:  # aux1, aux2
            setattr(self, head.name, InceptionAux(head))
        # global average (a fixed 7x7 in GluonCV; none in the lecture nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.dropout = nn.Dropout(plan.dropout)
        setattr(self, plan.fc.name, nn.Dense(plan.fc.out_features, in_units=plan.fc.in_features))  # fc (l: lecture)

    def _stages(self, F, x, with_aux: bool) -> dict:
        out = {}
        if self.plan.transform is not None:  # torchvision's transform_input, channel by channel
            t = self.plan.transform
            x = F.concat(*[F.slice_axis(x, axis=1, begin=c, end=c + 1) * s + b
                           for c, (s, b) in enumerate(zip(t.scale, t.shift))], dim=1)
        # N x 3 x 224 x 224
        for stage in self.plan.stages:
            x = getattr(self, stage.name)(x)
            # conv1: N x 64 x 112 x 112 ... inception5b: N x 1024 x 7 x 7 (spec table)
            out[stage.name] = x
            for head in self.plan.aux_for(stage.name) if with_aux else ():
                out[head.name] = getattr(self, head.name)(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
            # N x 1024 x 1 x 1
        x = F.flatten(x)
        # N x 1024, or the whole last map in (C, H, W) order: N x 1408 (inception_mnist)
        out["flatten"] = x
        x = self.dropout(x)
        out["logits"] = getattr(self, self.plan.fc.name)(x)
        # N x 1000 (num_classes)
        return out

    def forward_stages(self, x, with_aux: bool = False) -> dict:
        """Every stage's output by name, then ``flatten``, ``logits`` and the aux logits."""
        return self._stages(mx.nd, x, with_aux)

    def hybrid_forward(self, F, x):
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = mx.autograd.is_training() and bool(self.plan.aux)
        out = self._stages(F, x, with_aux=training_aux)
        if training_aux:
            return (out["logits"], *(out[head.name] for head in reversed(self.plan.aux)))
        return out["logits"]
