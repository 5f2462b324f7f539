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

from conformance.spec import aux_admits

from .engine import BatchStats
from .model import GoogLeNet


class Trainer:
    def __init__(
        self,
        model: GoogLeNet,
        lr: float,
        momentum: float,
        aux_weight: float = 0.3,
        record: bool = False,
        deterministic: bool = False,
    ) -> None:
        """``record``: keep each BatchNorm's batch mean and (biased) variance of the last step.
        ``deterministic``: the same steps give the same bits in every run (train --resume)."""
        self.model, self.aux_weight = model, aux_weight
        # deterministic: nothing to do, PyTorch's CPU kernels repeat bit for bit (measured on
        # googlenet_cifar, tests/test_resume.py).
        # buf = momentum * buf + grad; w -= lr * buf
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        self.kept = BatchStats(model) if record else None

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on an NCHW float32 batch and its int labels: (loss, correct)."""
        plan = self.model.plan
        with_aux = aux_admits(plan, x.shape[2:])
        target = torch.from_numpy(y.astype(np.int64))
        self.model.train()
        out = self.model.forward_stages(torch.from_numpy(x), with_aux=with_aux)
        loss = self.loss(out, target, with_aux)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), int((out["logits"].argmax(1) == target).sum())

    def loss(self, out: dict[str, torch.Tensor], target: torch.Tensor, with_aux: bool) -> torch.Tensor:
        """Cross-entropy of the logits plus ``aux_weight`` times each aux head's: a method
        of its own so impl_torch.distributed's Trainer computes the same loss on its shard."""
        loss = F.cross_entropy(out["logits"], target)
        for head in self.model.plan.aux if with_aux else ():
            loss = loss + self.aux_weight * F.cross_entropy(out[head.name], target)
        return loss

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradient of every trainable parameter, by canonical key."""
        return {k: p.grad.numpy().copy() for k, p in self.model.named_parameters() if p.grad is not None}

    def batch_stats(self) -> dict[str, np.ndarray]:
        """``<unit>.bn.batch_mean`` / ``.batch_var`` of the last step (needs ``record``)."""
        return self.kept.last() if self.kept is not None else {}

    def state(self) -> dict[str, np.ndarray]:
        """The optimizer's state by canonical key: each trainable parameter's momentum
        buffer, in PyTorch's convention (``buf``), empty before the first step or without
        momentum. With the weights, what a resumed run needs to go on bit for bit."""
        names = {id(p): k for k, p in self.model.named_parameters()}
        return {
            names[id(p)]: s["momentum_buffer"].detach().numpy().copy()
            for p, s in self.optimizer.state.items()
            if s.get("momentum_buffer") is not None
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set what ``state()`` returned (of a Trainer of the same framework and plan)."""
        params = dict(self.model.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise KeyError(f"optimizer state for unknown parameters {unknown[:3]}")
        for key, value in state.items():
            buffer = torch.from_numpy(np.array(value)).to(params[key].dtype)  # a copy: the caller keeps its array
            self.optimizer.state[params[key]]["momentum_buffer"] = buffer

    def reseed(self, seed: int) -> None:
        """Seed the random numbers of training (dropout): PyTorch's global generator."""
        torch.manual_seed(seed)
