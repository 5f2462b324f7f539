"""Training GoogLeNet in Keras 3, as d2l and Hongpu Liu's lecture train it: SGD with momentum on the
cross-entropy of the logits, plus ``aux_weight`` times each aux head's.

Mirrors ``impl_torch/train.py``. What differs, and why:

* Keras's SGD keeps ``v = momentum * v - lr * grad; w += v``: with a constant learning
  rate that is PyTorch's ``buf = momentum * buf + grad; w -= lr * buf``, v = -lr * buf.
* The gradient is each backend's own (``engine.gradient``): on TensorFlow a
  ``GradientTape`` in a ``tf.function`` (TensorFlow runs eager code several times slower;
  ``record`` runs it eagerly so BatchNorm can hand its batch statistics back), on JAX
  ``jax.value_and_grad`` under ``jax.jit``, on torch autograd, eagerly. The optimizer's
  update runs outside it, the same on every backend.
* Gradients come back in canonical layouts through the weight adapter's table.
* ``deterministic``: TensorFlow's op determinism (process-wide), see ``Trainer``.
"""

from __future__ import annotations

import keras
import numpy as np

from conformance.spec import aux_admits

from .engine import BatchStats, Gradient, gradient, momentums, op_determinism, reseed_dropout, walk
from .layers import BatchNorm
from .model import GoogLeNet
from .weights import located


def cross_entropy(labels, logits):
    """The batch mean, as ``torch.nn.functional.cross_entropy``."""
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


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
        # Some CPU kernels sum in an order that varies run to run (googlenet_cifar: 3 of 8
        # repeats of two steps differed); op determinism picks deterministic ones, during
        # this trainer's steps only (TensorFlow's switch is process-wide). oneDNN's kernels
        # vary too and can only be switched off before TensorFlow is imported
        # (TF_ENABLE_ONEDNN_OPTS=0, which ``train`` sets).
        self.deterministic = deterministic
        self.optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
        self.bns = [layer for layer in walk(model) if isinstance(layer, BatchNorm)]
        self.kept = BatchStats(model) if record else None
        # on TensorFlow the whole step is one tf.function (record: eager, so BatchNorm's batch
        # statistics exist after it); JAX compiles the gradient itself, torch runs eagerly
        self._step = self._eager_step
        if keras.backend.backend() == "tensorflow" and not record:
            import tensorflow as tf

            self._step = tf.function(self._eager_step)
        self._gradients: dict[bool, Gradient] = {}  # by with_aux: the trained variables differ
        self._last: tuple[list, list] = ([], [])  # the variables and gradients of the last step

    def _gradient(self, with_aux: bool) -> Gradient:
        if with_aux not in self._gradients:
            variables = trained_variables(self.model, with_aux)

            def forward(x, y):
                out = self.model.forward_stages(x, with_aux=with_aux, training=True)
                return self.loss(out, y, with_aux), out

            self._gradients[with_aux] = gradient(self.model, variables, forward)
        return self._gradients[with_aux]

    def _eager_step(self, x, y, with_aux: bool):
        variables = trained_variables(self.model, with_aux)
        loss, out, grads = self._gradient(with_aux)(x, y)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        predicted = keras.ops.cast(keras.ops.argmax(out["logits"], 1), "int64")
        correct = keras.ops.sum(keras.ops.cast(keras.ops.equal(predicted, y), "int32"))
        return loss, correct, grads

    def loss(self, out: dict, target, with_aux: bool):
        """Cross-entropy of the logits plus ``aux_weight`` times each aux head's: a method
        of its own so impl_keras.distributed's Trainer computes the same loss on its shard."""
        loss = cross_entropy(target, out["logits"])
        for head in self.model.plan.aux if with_aux else ():
            loss = loss + self.aux_weight * cross_entropy(target, out[head.name])
        return loss

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on an NCHW float32 batch and its int labels: (loss, correct)."""
        with_aux = aux_admits(self.model.plan, x.shape[2:])
        if not self.optimizer.built:  # over every variable: a step at a size that admits the heads trains them
            self.optimizer.build(self.model.trainable_variables)
        with op_determinism(self.deterministic):
            nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            loss, correct, grads = self._step(nhwc, y.astype(np.int64), with_aux)
        self._last = (trained_variables(self.model, with_aux), grads)
        return float(keras.ops.convert_to_numpy(loss)), int(keras.ops.convert_to_numpy(correct))

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradient of every trainable parameter, by canonical key and
        in canonical layout."""
        variables, grads = self._last
        by_path = {v.path: keras.ops.convert_to_numpy(g) for v, g in zip(variables, grads, strict=True)}
        return {
            key: np.ascontiguousarray(row.to_canonical(by_path[var.path]))
            for key, row, var in located(self.model, self.model.plan)
            if var.path in by_path
        }

    def batch_stats(self) -> dict[str, np.ndarray]:
        """``<unit>.bn.batch_mean`` / ``.batch_var`` of the last step (needs ``record``)."""
        return self.kept.last() if self.kept is not None else {}

    def state(self) -> dict[str, np.ndarray]:
        """The optimizer's state by canonical key, in canonical layout: each trainable
        variable's momentum, in Keras's convention (``v = -lr * buf``), empty before the
        first step or without momentum."""
        if not self.optimizer.built:
            return {}
        by_path = {v.path: m for v, m in momentums(self.optimizer, self.model.trainable_variables)}
        return {
            key: np.ascontiguousarray(row.to_canonical(keras.ops.convert_to_numpy(by_path[var.path].value)))
            for key, row, var in located(self.model, self.model.plan)
            if var.path in by_path
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set what ``state()`` returned (of a Trainer of the same framework and plan)."""
        by_path = {v.path: m for v, m in momentums(self.optimizer, self.model.trainable_variables)}
        rows = {key: (row, var) for key, row, var in located(self.model, self.model.plan)}
        unknown = sorted(k for k in state if k not in rows or rows[k][1].path not in by_path)
        if unknown:
            raise KeyError(f"optimizer state for unknown parameters {unknown[:3]}")
        for key, value in state.items():
            row, var = rows[key]
            by_path[var.path].assign(row.to_keras(value))

    def reseed(self, seed: int) -> None:
        """Seed the random numbers of training (dropout): each Dropout's seed generator."""
        reseed_dropout(self.model, seed)


def trained_variables(model: GoogLeNet, with_aux: bool) -> list:
    """The variables a step trains: every trainable one but those of aux heads that are
    built but not admitted at this step's size. Outside the loss, those have no gradient
    and are not handed to the optimizer: no update and no momentum, as PyTorch's SGD
    skips a parameter whose grad is None (Keras would drop them itself, with a warning)."""
    heads = () if with_aux else tuple(f"{head.name}." for head in model.plan.aux)
    resting = {var.path for key, _, var in located(model, model.plan) if key.startswith(heads)}
    return [var for var in model.trainable_variables if var.path not in resting]
