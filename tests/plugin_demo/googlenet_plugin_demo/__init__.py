"""A third party's GoogLeNet backend: PyTorch's implementation under a name of its own,
reached only through the suite's published contract (``conformance.interface``)."""

import impl_torch
from impl_torch import MODES, Trainer, build, count_params, forward, from_canonical, stages, to_canonical, to_onnx

name = "demo"
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


def version() -> str:
    return f"demo 0.1.0 on {impl_torch.version()}"
