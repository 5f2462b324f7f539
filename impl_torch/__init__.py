"""GoogLeNet in PyTorch: the shared interface (see ``conformance.interface``)."""

from __future__ import annotations

import numpy as np
import torch

from conformance import interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "torch"
__all__ = [
    "GoogLeNet",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "stages",
    "to_canonical",
    "version",
]


def version() -> str:
    return f"torch {torch.__version__}"


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """A GoogLeNet in eval mode holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    model = GoogLeNet(resolve(variant, num_classes, aux_logits, transform_input)).to(getattr(torch, dtype))
    from_canonical(model, default_params(model.plan))
    return model.eval()


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool) -> dict[str, np.ndarray]:
    was_training = model.training
    try:
        with torch.inference_mode():
            out = model.eval().forward_stages(torch.from_numpy(x), with_aux=with_aux)
    finally:
        model.train(was_training)
    return {k: v.numpy() for k, v in out.items()}


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, model, x, aux)


def stages(model: GoogLeNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, model, x)


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running statistics), counted by PyTorch."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, stats
