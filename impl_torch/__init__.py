"""GoogLeNet in PyTorch: the shared interface (see ``conformance.interface``)."""

from __future__ import annotations

import numpy as np
import torch

from conformance import interface
from conformance.spec import configure, plan

from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "torch"
__all__ = ["GoogLeNet", "Trainer", "build", "count_params", "forward", "from_canonical", "stages",
           "to_canonical", "version"]


def version() -> str:
    return f"torch {torch.__version__}"


def build(variant: str, num_classes: int | None = None, aux_logits: bool = False, dtype: str = "float32",
          **options: object) -> GoogLeNet:
    """A GoogLeNet in eval mode, initialised as torchvision does (truncated normal,
    std 0.01, for conv and linear weights; BatchNorm scale 1, shift 0). ``dtype``:
    float64 for the training-parity check."""
    model = GoogLeNet(plan(configure(variant, num_classes, aux_logits, **options))).to(getattr(torch, dtype))
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
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
    stats = sum(b.numel() for n, b in model.named_buffers()
                if n.endswith(("running_mean", "running_var")))
    return trainable, stats
