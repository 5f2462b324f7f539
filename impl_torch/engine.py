"""What PyTorch's trainer and backend need beside the layers: the record of a model's
writes, and the catch of each BatchNorm's batch statistics during a training step.

Mirrors ``impl_keras/engine.py``, ``impl_mxnet/engine.py`` and ``impl_jax/engine.py``:
the same ``BatchStats`` in each, so every ``Trainer`` hands its batch statistics back
the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BatchStats:
    """Each BatchNorm's batch mean and (biased) variance of the last training step, by
    ``<unit>.bn.batch_mean`` / ``.batch_var``: PyTorch's forward hooks see each
    BatchNorm's input as it runs."""

    def __init__(self, model: nn.Module) -> None:
        self.stats: dict[str, np.ndarray] = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if module.training:
                x = inputs[0].detach()
                self.stats[f"{name}.batch_mean"] = x.mean((0, 2, 3)).numpy()
                self.stats[f"{name}.batch_var"] = x.var((0, 2, 3), unbiased=False).numpy()

        return hook

    def last(self) -> dict[str, np.ndarray]:
        return dict(self.stats)


# PyTorch keeps no public record of a tensor's writes: ``Tensor._version``, which counts
# every in-place change (what autograd checks), is the suite's one call into it.
def weights_version(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever a weight or statistic of ``model`` is written or replaced."""
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())
