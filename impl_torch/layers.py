"""The layers of GoogLeNet's units in PyTorch, one maker per kind of op in the plan.

Mirrors ``impl_keras/layers.py`` and ``impl_mxnet/layers.py``: the same makers in the
same order, so ``model.py`` reads the same in all three. PyTorch has every layer the
spec needs (the spec states its semantics, so nothing is missing here); Keras and
Gluon fill their gaps in their own ``layers.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conformance.spec import LRN, BatchNormSettings, ConvUnit, Op, Pool, PoolUnit


class SamePad(nn.Module):
    """TensorFlow's SAME padding (``conformance.spec.same_pads``), which PyTorch has only
    at stride 1 (``padding="same"``): at stride 2 it is asymmetric and depends on the
    input's size (a 7x7/2 conv pads (2, 3) on 224, (3, 3) on 223), so it is computed here
    from the size at run time. A max pool's padding is -inf, so a padded cell never wins,
    as in TensorFlow."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def pads(self, size: int) -> list[int]:
        total = max((-(-size // self.stride) - 1) * self.stride + self.kernel - size, 0)
        return [total // 2, total - total // 2]

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pads(x.shape[-1]) + self.pads(x.shape[-2]), value=self.value)  # (left, right, top, bottom)


def make_norm(channels: int, norm: BatchNormSettings) -> nn.BatchNorm2d:
    # momentum: the weight of the new batch statistic (0.1), the spec's convention
    bn = nn.BatchNorm2d(channels, eps=norm.eps, momentum=norm.momentum, affine=norm.scale)
    if not norm.scale:  # TF-slim's: a shift without a scale; BatchNorm2d's forward takes weight None
        bn.bias = nn.Parameter(torch.zeros(channels))
    return bn


class BasicConv2d(nn.Module):
    """[SAME pad] -> conv -> [BatchNorm] -> [ReLU]. PyTorch pads symmetrically:
    ``padding=3`` is (3, 3); TensorFlow's SAME is a ``SamePad`` before an unpadded conv."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__()
        self.pad = SamePad(unit.kernel, unit.stride) if unit.same else None
        self.conv = nn.Conv2d(
            unit.in_channels, unit.out_channels, unit.kernel, stride=unit.stride, padding=unit.padding, bias=unit.bias
        )
        self.bn = None if unit.norm is None else make_norm(unit.out_channels, unit.norm)
        self.relu = unit.relu

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class PlainConv2d(nn.Conv2d):
    """A bare conv, as Liu's lecture writes it (weights at ``incep1.branch1x1.weight``),
    with the ReLU its unit asks for."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__(
            unit.in_channels, unit.out_channels, unit.kernel, stride=unit.stride, padding=unit.padding, bias=unit.bias
        )
        self.relu = unit.relu

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)  # Conv2d's forward: TorchScript has no super()
        return F.relu(x) if self.relu else x


def make_pool(pool: PoolUnit) -> nn.Module:
    if not isinstance(pool, Pool):  # the adaptive aux pool: PyTorch's own window rule
        return nn.AdaptiveAvgPool2d(pool.size)
    if pool.same:  # TensorFlow's SAME: padded by hand with -inf, then an unpadded pool
        return nn.Sequential(SamePad(pool.kernel, pool.stride, -float("inf")), nn.MaxPool2d(pool.kernel, pool.stride))
    if pool.kind == "max":  # padded cells never win: PyTorch pads max pools with -inf
        return nn.MaxPool2d(pool.kernel, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
    return nn.AvgPool2d(
        pool.kernel, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=pool.count_include_pad
    )


def make_lrn(lrn: LRN) -> nn.Module:
    return nn.LocalResponseNorm(lrn.size, lrn.alpha, lrn.beta, lrn.k)  # alpha / size inside, as the spec


def make_relu(name: str) -> nn.Module:
    return nn.ReLU()


def make_op(op: Op) -> nn.Module:
    if isinstance(op, ConvUnit):
        return PlainConv2d(op) if op.plain else BasicConv2d(op)
    return make_pool(op)


def make_chain(ops: tuple[Op, ...]) -> nn.Module:
    """A single op stands alone (``branch1.conv``); a chain is numbered (``branch2.0.conv``)."""
    return make_op(ops[0]) if len(ops) == 1 else nn.Sequential(*map(make_op, ops))
