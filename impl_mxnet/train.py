"""Training GoogLeNet in MXNet Gluon, as d2l and Hongpu Liu's lecture train it: SGD with momentum on the
cross-entropy of the logits, plus ``aux_weight`` times each aux head's.

Mirrors ``impl_torch/train.py``. What differs, and why:

* Gluon's SGD keeps ``mom = momentum * mom - lr * grad; w += mom``: with a constant
  learning rate that is PyTorch's rule, mom = -lr * buf.
* Training mode is ``autograd.record()``: inside it BatchNorm uses batch statistics and
  Dropout drops; ``trainer.step(1)`` because the loss is already a batch mean.
* The step runs the hybridized network (one cached graph: up to 1.4 times faster on
  ``inception_mnist``, as fast on the large nets; docs/benchmarks.md) unless
  ``record`` asks for BatchNorm's batch statistics, which only an imperative run hands
  back, as Keras's ``record`` runs eagerly.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from conformance.spec import aux_admits

from .engine import BatchStats, momentum_states, set_momentum_states
from .model import GoogLeNet
from .weights import located


class Trainer:
    def __init__(
        self,
        model: GoogLeNet,
        lr: float,
        momentum: float,
        aux_weight: float = 0.3,
        record: bool = False,
        deterministic: bool = False,
        hybridize: bool = True,
    ) -> None:
        """``record``: keep each BatchNorm's batch mean and (biased) variance of the last step
        (the step then runs imperatively). ``deterministic``: the same steps give the same
        bits in every run (train --resume). ``hybridize``: run the hybridized network."""
        self.model, self.aux_weight = model, aux_weight
        # deterministic: nothing to do, MXNet's CPU kernels repeat bit for bit (measured on
        # googlenet_cifar, tests/test_resume.py).
        self.hybrid = hybridize and not record
        if self.hybrid:
            model.hybridize()
        self.trainer = mx.gluon.Trainer(
            model.collect_params(), "sgd", {"learning_rate": lr, "momentum": momentum, "wd": 0.0}
        )
        self.ce = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        self.kept = BatchStats(model) if record else None

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on an NCHW float32 batch and its int labels: (loss, correct)."""
        loss, correct = self.backward(x, y)
        self.update(1)
        return float(loss.asscalar()), int(correct.asscalar())

    def backward(self, x: np.ndarray, y: np.ndarray, weight: float = 1.0) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        """The gradients of ``weight`` times the batch's mean loss, left in the parameters;
        (the mean loss, the correct count) as NDArrays. Apart from ``step`` so that
        ``distributed.Trainer`` runs the same forward on its shard, weighted."""
        plan = self.model.plan
        with_aux = aux_admits(plan, x.shape[2:])
        data, target = mx.nd.array(x, dtype=x.dtype), mx.nd.array(y, dtype=x.dtype)
        with mx.autograd.record():
            if self.hybrid and with_aux == bool(plan.aux):  # the graph: logits, or logits, aux2, aux1
                names = ("logits", *(head.name for head in reversed(plan.aux)))
                out = dict(zip(names, self.model(data) if plan.aux else (self.model(data),), strict=True))
            else:
                out = self.model.forward_stages(data, with_aux=with_aux)
            loss = self.loss(out, target, with_aux)
            scaled = loss * weight if weight != 1.0 else loss  # recorded, so backward sees it
        scaled.backward()
        heads = () if with_aux else tuple(f"{head.name}." for head in plan.aux)
        self.resting = frozenset(
            key for key, param in located(self.model, plan) if key.startswith(heads) and param.grad_req != "null"
        )
        return loss, (out["logits"].argmax(axis=1) == target).sum()

    def loss(self, out: dict[str, mx.nd.NDArray], target: mx.nd.NDArray, with_aux: bool) -> mx.nd.NDArray:
        """Cross-entropy of the logits plus ``aux_weight`` times each aux head's: a method
        of its own, as in every framework's Trainer."""
        loss = self.ce(out["logits"], target).mean()
        for head in self.model.plan.aux if with_aux else ():
            loss = loss + self.aux_weight * self.ce(out[head.name], target).mean()
        return loss

    resting: frozenset[str] = frozenset()  # the last step's keys of aux heads outside its loss (set by backward)

    def update(self, batch_size: int) -> None:
        """``gluon.Trainer.step(batch_size)`` with the parameters of aux heads that are built
        but not admitted at this step's size (:attr:`resting`) held at ``grad_req='null'``:
        outside the loss they have no gradient, so Gluon neither reduces nor updates them
        (no momentum either, as PyTorch's SGD skips a parameter whose grad is None), and its
        stale-gradient check still guards every other parameter."""
        held = {param: param.grad_req for key, param in located(self.model, self.model.plan) if key in self.resting}
        for param in held:
            param.grad_req = "null"
        try:
            self.trainer.step(batch_size)
        finally:
            for param, req in held.items():
                param.grad_req = req

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradient of every trainable parameter, by canonical key."""
        return {
            key: param.grad().asnumpy()
            for key, param in located(self.model, self.model.plan)
            if param.grad_req != "null" and key not in self.resting
        }

    def batch_stats(self) -> dict[str, np.ndarray]:
        """``<unit>.bn.batch_mean`` / ``.batch_var`` of the last step (needs ``record``)."""
        return self.kept.last() if self.kept is not None else {}

    def state(self) -> dict[str, np.ndarray]:
        """The optimizer's state by canonical key: each trainable parameter's momentum, in
        Gluon's convention (``mom = -lr * buf``), empty before the first step or without
        momentum."""
        states = momentum_states(self.trainer)
        return {key: states[p.name].asnumpy() for key, p in located(self.model, self.model.plan) if p.name in states}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set what ``state()`` returned (of a Trainer of the same framework and plan)."""
        params = dict(located(self.model, self.model.plan))
        unknown = sorted(k for k in state if k not in params or params[k].grad_req == "null")
        if unknown:
            raise KeyError(f"optimizer state for unknown parameters {unknown[:3]}")
        set_momentum_states(
            self.trainer, {params[k].name: mx.nd.array(v, dtype=params[k].dtype) for k, v in state.items()}
        )

    def reseed(self, seed: int) -> None:
        """Seed the random numbers of training (dropout): MXNet's global generators."""
        mx.random.seed(seed)
