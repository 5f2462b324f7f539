"""Training GoogLeNet in PyTorch, as d2l and Hongpu Liu's lecture train it: SGD with momentum on the
cross-entropy of the logits, plus ``aux_weight`` times each aux head's.

Mirrors ``impl_keras/train.py`` and ``impl_mxnet/train.py``: the same ``Trainer``,
whose gradients and BatchNorm batch statistics come back with canonical names and
layouts, so the training-parity check compares them key by key.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conformance.spec import aux_admits

from .model import GoogLeNet


class Trainer:
    def __init__(
        self, model: GoogLeNet, lr: float, momentum: float, aux_weight: float = 0.3, record: bool = False
    ) -> None:
        """``record``: keep each BatchNorm's batch mean and (biased) variance of the last step."""
        self.model, self.aux_weight = model, aux_weight
        # buf = momentum * buf + grad; w -= lr * buf
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        self.stats: dict[str, np.ndarray] = {}
        for name, module in model.named_modules() if record else ():
            if isinstance(module, nn.BatchNorm2d):
                module.register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach()
            self.stats[f"{name}.batch_mean"] = x.mean((0, 2, 3)).numpy()
            self.stats[f"{name}.batch_var"] = x.var((0, 2, 3), unbiased=False).numpy()

        return hook

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on an NCHW float32 batch and its int labels: (loss, correct)."""
        plan = self.model.plan
        with_aux = aux_admits(plan, x.shape[2:])
        target = torch.from_numpy(y.astype(np.int64))
        self.model.train()
        out = self.model.forward_stages(torch.from_numpy(x), with_aux=with_aux)
        loss = F.cross_entropy(out["logits"], target)
        for head in plan.aux if with_aux else ():
            loss = loss + self.aux_weight * F.cross_entropy(out[head.name], target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), int((out["logits"].argmax(1) == target).sum())

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradient of every trainable parameter, by canonical key."""
        return {k: p.grad.numpy().copy() for k, p in self.model.named_parameters() if p.grad is not None}

    def batch_stats(self) -> dict[str, np.ndarray]:
        """``<unit>.bn.batch_mean`` / ``.batch_var`` of the last step (needs ``record``)."""
        return dict(self.stats)
