"""The same backend with one mistake a port makes: max pools that round their output
size down (PyTorch's default) where GoogLeNet's round up. Shapes differ only at input
sizes where the rounding matters; the suite's check must catch it there."""

from typing import Any

from torch import nn

from . import MODES, Trainer, count_params, forward, from_canonical, stages, to_canonical, to_onnx, version
from . import build as _build

name = "demo-floor"
INTERFACE_VERSION = 1
__all__ = [
    "INTERFACE_VERSION",
    "MODES",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "name",
    "stages",
    "to_canonical",
    "to_onnx",
    "version",
]


def build(*args: Any, **kwargs: Any) -> nn.Module:
    model = _build(*args, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = False
    return model
