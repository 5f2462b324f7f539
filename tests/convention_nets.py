"""Models that expect another input convention than their variant's, written as a user
writes one: the preprocessing a port was trained behind, inside ``forward``.

``caffe_input``: pytorch-cifar100's GoogLeNet behind Caffe's input (BGR pixels in
0-255 less the mean pixel (104, 117, 123)): it takes that back to the RGB, CIFAR-100
normalised image its network reads. ``pixels_255``: d2l's network fed 8-bit pixels."""

from __future__ import annotations

import torch
from torch import nn

import impl_torch
from tests import user_nets

CIFAR100_MEAN = (0.5070751592371323, 0.48654887331495095, 0.4409178433670343)
CIFAR100_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


class CaffeInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = impl_torch.build("googlenet_cifar")
        # constants, not buffers: a user's preprocessing holds no tensor of the network
        self.pixel_mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
        self.mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x + self.pixel_mean).flip(1) / 255  # BGR 0-255 less the mean -> RGB 0-1
        return self.net((rgb - self.mean) / self.std)


def caffe_input() -> nn.Module:
    return CaffeInput()


class Pixels255(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = user_nets.d2l()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 255)


def pixels_255() -> nn.Module:
    return Pixels255()
