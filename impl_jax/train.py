"""Training GoogLeNet in JAX + Flax, as d2l and Hongpu Liu's lecture train it: SGD with
momentum on the cross-entropy of the logits, plus ``aux_weight`` times each aux head's.

Mirrors ``impl_torch/train.py``. What differs, and why:

* The optimizer is optax's ``sgd``, whose momentum is PyTorch's convention:
  ``trace = momentum * trace + grad; w -= lr * trace`` (``trace`` is PyTorch's ``buf``).
* A step is a pure function of the model's state (parameters, running statistics,
  dropout keys), compiled once by ``jax.jit`` per model structure and input shape; the
  model is split into that state and updated from what the step returns.
* Parameters of aux heads an input size does not admit have no part in the loss; JAX
  hands them zero gradients where PyTorch has none, so the step keeps them and their
  momentum as they were, as PyTorch's SGD skips a parameter without a gradient.
* Gradients and momentum come back in canonical layouts through the weight adapter.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conformance.spec import aux_admits

from .engine import BatchStats
from .model import GoogLeNet
from .weights import canonical_key, from_flax, to_flax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The batch mean, as ``torch.nn.functional.cross_entropy``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def total_loss(out: dict[str, jax.Array], labels: jax.Array, plan, with_aux: bool, aux_weight: float) -> jax.Array:
    """Cross-entropy of the logits plus ``aux_weight`` times each aux head's."""
    loss = cross_entropy(out["logits"], labels)
    for head in plan.aux if with_aux else ():
        loss = loss + aux_weight * cross_entropy(out[head.name], labels)
    return loss


def module_path(keys: tuple) -> tuple[str, ...]:
    """A pytree key path (of a State, or of optax's state holding one) as the module path
    it leads to: ``('inception3a', 'branch1', 'conv', 'kernel')``."""
    return tuple(str(k.key) for k in keys if isinstance(k, jax.tree_util.DictKey))


def keep_resting(new, old, resting: tuple[str, ...]):
    """``new`` with the leaves under the modules named in ``resting`` taken from ``old``."""
    return jax.tree_util.tree_map_with_path(
        lambda keys, n, o: o if module_path(keys)[:1] in {(r,) for r in resting} else n, new, old
    )


def split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(structure, parameters, the rest: running statistics, dropout keys, recorded
    batch statistics), the three parts a step takes apart and puts back."""
    return cast("tuple[nnx.GraphDef, nnx.State, nnx.State]", nnx.split(model, nnx.Param, ...))


def _train_step(graphdef, params, rest, opt_state, x, labels, with_aux, aux_weight, resting, optimizer):
    """One SGD step as a pure function: (params, rest, opt_state, loss, correct, grads)."""

    def loss_of(params):
        # Flax lets a variable be written in the trace that made it only: the running
        # statistics are remade here, inside the gradient's trace, so BatchNorm can update them
        net = nnx.merge(graphdef, params, jax.tree_util.tree_map(lambda leaf: leaf, rest))
        out = net.forward_stages(x, with_aux=with_aux)
        loss = total_loss(out, labels, net.plan, with_aux, aux_weight)
        return loss, (out["logits"], split(net)[2])

    (loss, (logits, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_params = keep_resting(new_params, params, resting)
    new_opt_state = keep_resting(new_opt_state, opt_state, resting)
    correct = jnp.sum(jnp.argmax(logits, axis=1) == labels)
    return new_params, new_rest, new_opt_state, loss, correct, grads


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
        # deterministic: nothing to do, XLA's CPU kernels repeat bit for bit
        # (tests/test_jax.py holds it).
        # trace = momentum * trace + grad; w -= lr * trace. No momentum: no state, as PyTorch
        self.optimizer = optax.sgd(lr, momentum=momentum or None)
        self.opt_state = None
        self.trained: set[str] = set()  # canonical keys that had a gradient: what has momentum
        self.kept = BatchStats(model) if record else None
        self._grads: dict[str, np.ndarray] = {}
        # the old parameters, state and momentum are donated: the step's outputs take their
        # buffers, so a step holds one copy of each, not two (the model gets the new ones)
        self._step = jax.jit(_train_step, static_argnums=(0, 6, 7, 8, 9), donate_argnums=(1, 2, 3))

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on an NCHW batch and its int labels: (loss, correct)."""
        plan = self.model.plan
        with_aux = aux_admits(plan, x.shape[2:])
        resting = () if with_aux else tuple(head.name for head in plan.aux)
        self.model.train()
        graphdef, params, rest = split(self.model)
        if self.opt_state is None:
            self.opt_state = self._initial_state(params)
        inputs = jnp.asarray(x.transpose(0, 2, 3, 1), self.model.dtype)
        labels = jnp.asarray(y.astype(np.int64))
        params, rest, self.opt_state, loss, correct, grads = self._step(
            graphdef, params, rest, self.opt_state, inputs, labels, with_aux, self.aux_weight, resting, self.optimizer
        )
        nnx.update(self.model, params, rest)
        self._grads = {
            canonical_key(module_path(keys)): np.ascontiguousarray(from_flax(np.asarray(g)))
            for keys, g in jax.tree_util.tree_leaves_with_path(grads)
            if module_path(keys)[0] not in resting
        }
        self.trained |= set(self._grads)
        return float(loss), int(correct)

    def _initial_state(self, params: nnx.State):
        """``optimizer.init(params)`` made in numpy: sgd's trace (and any count) starts at
        zero, and optax's own init, run op by op, compiles a fill for every distinct shape."""
        shapes = jax.eval_shape(self.optimizer.init, params)
        return jax.tree_util.tree_map(lambda leaf: jnp.asarray(np.zeros(leaf.shape, leaf.dtype)), shapes)

    def loss(self, out: dict[str, jax.Array], target: jax.Array, with_aux: bool) -> jax.Array:
        """Cross-entropy of the logits plus ``aux_weight`` times each aux head's (the pure
        step calls the same ``total_loss``)."""
        return total_loss(out, target, self.model.plan, with_aux, self.aux_weight)

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradient of every trainable parameter, by canonical key and
        in canonical layout."""
        return dict(self._grads)

    def batch_stats(self) -> dict[str, np.ndarray]:
        """``<unit>.bn.batch_mean`` / ``.batch_var`` of the last step (needs ``record``)."""
        return self.kept.last() if self.kept is not None else {}

    def _traces(self) -> list[tuple[str, jax.Array]]:
        leaves = jax.tree_util.tree_leaves_with_path(self.opt_state)
        return [(canonical_key(module_path(keys)), leaf) for keys, leaf in leaves if module_path(keys)]

    def state(self) -> dict[str, np.ndarray]:
        """The optimizer's state by canonical key, in canonical layout: each trained
        parameter's momentum (optax's ``trace``, PyTorch's ``buf``), empty before the
        first step or without momentum."""
        if self.opt_state is None:
            return {}
        return {
            key: np.ascontiguousarray(from_flax(np.asarray(trace)))
            for key, trace in self._traces()
            if key in self.trained
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set what ``state()`` returned (of a Trainer of the same framework and plan)."""
        if self.opt_state is None:
            self.opt_state = self._initial_state(nnx.state(self.model, nnx.Param))
        known = {key for key, _ in self._traces()}
        unknown = sorted(set(state) - known)
        if unknown:
            raise KeyError(f"optimizer state for unknown parameters {unknown[:3]}")

        def loaded(keys, trace):
            key = canonical_key(module_path(keys)) if module_path(keys) else None
            if key not in state:
                return trace
            return jnp.asarray(to_flax(np.array(state[key])), trace.dtype)

        self.opt_state = jax.tree_util.tree_map_with_path(loaded, self.opt_state)
        self.trained |= set(state)

    def reseed(self, seed: int) -> None:
        """Seed the random numbers of training (dropout): the model's one dropout key stream."""
        nnx.reseed(self.model, dropout=seed)
