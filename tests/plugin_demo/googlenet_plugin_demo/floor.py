"""The same backend with one mistake a port makes: max pools that round their output
size down (PyTorch's default) where GoogLeNet's round up. Shapes differ only at input
sizes where the rounding matters; the suite's check must catch it there."""

from typing import Any

from torch import nn

from . import *  # noqa: F403 - the whole interface of the correct backend, then two names replaced
from . import __all__  # noqa: F401 - the same names, this module's own
from . import build as _build

name = "demo-floor"


def build(*args: Any, **kwargs: Any) -> nn.Module:
    model = _build(*args, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = False
    return model
