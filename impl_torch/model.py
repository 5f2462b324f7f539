"""GoogLeNet in PyTorch, built from a ``conformance.spec`` plan.

Mirrors ``impl_keras/model.py`` and ``impl_mxnet/model.py`` block for block: same
class names, same attribute names (which are the canonical checkpoint names), same
order. The module tree is torchvision's, so ``state_dict()`` keys are torchvision's.
Shape comments are for the paper network at 224 x 224; the spec prints any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class BasicConv2d(nn.Module):
    """conv -> [BatchNorm] -> [ReLU]. PyTorch pads symmetrically: ``padding=3`` is (3, 3)."""

    def __init__(self, u: ConvUnit) -> None:
        super().__init__()
        self.conv = nn.Conv2d(u.in_channels, u.out_channels, u.kernel, stride=u.stride,
                              padding=u.padding, bias=u.bias)
        self.bn = None if u.norm is None else nn.BatchNorm2d(
            u.out_channels, eps=u.norm.eps, momentum=u.norm.momentum)
        self.relu = nn.ReLU(inplace=True) if u.relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class PlainConv2d(nn.Conv2d):
    """A bare conv, as the lecture nets write it (weights at ``incep1.branch1x1.weight``),
    with the ReLU its unit asks for."""

    def __init__(self, u: ConvUnit) -> None:
        super().__init__(u.in_channels, u.out_channels, u.kernel, stride=u.stride, padding=u.padding, bias=u.bias)
        self.relu = u.relu

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return F.relu(x) if self.relu else x


def make_pool(p: Pool | AdaptiveAvgPool) -> nn.Module:
    if isinstance(p, AdaptiveAvgPool):
        return nn.AdaptiveAvgPool2d(p.size)
    if p.kind == "max":  # padded cells never win: PyTorch pads max pools with -inf
        return nn.MaxPool2d(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
    return nn.AvgPool2d(p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode,
                        count_include_pad=p.count_include_pad)


def make_op(op: Op) -> nn.Module:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op) if op.plain else BasicConv2d(op)
    return make_pool(op)


def make_branch(ops: tuple[Op, ...]) -> nn.Module:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops[0]) if len(ops) == 1 else nn.Sequential(*map(make_op, ops))


class Inception(nn.Module):
    def __init__(self, block: InceptionBlock) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branch1, self.branch2, self.branch3, self.branch4 = map(make_branch, block.branches)

    def forward(self, x: Tensor) -> Tensor:
        # N x 192 x 28 x 28 (inception3a)
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        # N x (64 + 128 + 32 + 32) x 28 x 28: concatenated on the channel axis
        return torch.cat(branches, 1)


class InceptionA(nn.Module):
    """The lecture's Inception block: its ops are attributes named as the post names them."""

    def __init__(self, block: InceptionBlock) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, no ReLU anywhere
        self.branches = [[local(op.name) for op in branch] for branch in block.branches]
        for branch in block.branches:
            for op in branch:
                self.add_module(local(op.name), make_op(op))

    def forward(self, x: Tensor) -> Tensor:
        # N x 10 x 12 x 12 (incep1)
        outputs = []
        for branch in self.branches:
            y = x
            for name in branch:
                y = getattr(self, name)(y)
            outputs.append(y)
        # N x (16 + 24 + 24 + 24) x 12 x 12
        return torch.cat(outputs, 1)


class ResidualBlock(nn.Module):
    def __init__(self, block: ResidualUnit) -> None:
        super().__init__()
        self.conv1 = make_op(block.conv1)  # with its ReLU
        self.conv2 = make_op(block.conv2)  # without

    def forward(self, x: Tensor) -> Tensor:
        # N x 16 x 12 x 12 (rblock1)
        return F.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(nn.Module):
    def __init__(self, head: AuxUnit) -> None:
        super().__init__()
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv)
        self.fc1 = nn.Linear(head.fc1.in_features, head.fc1.out_features)
        self.fc2 = nn.Linear(head.fc2.in_features, head.fc2.out_features)
        self.dropout = nn.Dropout(head.dropout)

    def forward(self, x: Tensor) -> Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = torch.flatten(x, 1)
        # N x 2048, in (C, H, W) order: the canonical order
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        return self.fc2(x)
        # N x 1000 (num_classes)


def make_stage(stage: Stage) -> nn.Module:
    if isinstance(stage, LRN):  # alpha is divided by size inside, as the spec means it
        return nn.LocalResponseNorm(stage.size, stage.alpha, stage.beta, stage.k)
    if isinstance(stage, ReLU):
        return nn.ReLU()
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage)
    if isinstance(stage, InceptionBlock):
        return InceptionA(stage) if stage.flat else Inception(stage)
    return make_op(stage)


class GoogLeNet(nn.Module):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            self.add_module(stage.name, make_stage(stage))
        for head in plan.aux:  # aux1, aux2
            self.add_module(head.name, InceptionAux(head))
        # global average (a fixed 7x7 in GluonCV; none in the lecture nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.dropout = nn.Dropout(plan.dropout)
        self.add_module(plan.fc.name, nn.Linear(plan.fc.in_features, plan.fc.out_features))  # fc (l: lecture)

    def forward_stages(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        """Every stage's output by name, then ``flatten``, ``logits`` and the aux logits."""
        out: dict[str, Tensor] = {}
        if self.plan.transform is not None:  # torchvision's transform_input, channel by channel
            t = self.plan.transform
            x = torch.cat([x[:, c:c + 1] * s + b for c, (s, b) in enumerate(zip(t.scale, t.shift))], 1)
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
        x = torch.flatten(x, 1)
        # N x 1024, or the whole last map in (C, H, W) order: N x 1408 (inception_mnist)
        out["flatten"] = x
        x = self.dropout(x)
        out["logits"] = getattr(self, self.plan.fc.name)(x)
        # N x 1000 (num_classes)
        return out

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = self.training and bool(self.plan.aux)
        out = self.forward_stages(x, with_aux=training_aux)
        if training_aux:
            return (out["logits"], *(out[head.name] for head in reversed(self.plan.aux)))
        return out["logits"]
