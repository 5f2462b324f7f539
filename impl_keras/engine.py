"""What Keras's trainer and backend need beside the layers: tf.distribute's replica
context, the walk over nested layers, the optimizer's momentums, dropout's seeds, op
determinism, the catch of each BatchNorm's batch statistics during a training step, and
the gradient of a loss on each of Keras's backends (TensorFlow, JAX, torch).

Mirrors ``impl_torch/engine.py``, ``impl_mxnet/engine.py`` and ``impl_jax/engine.py``:
the same ``BatchStats`` in each, so every ``Trainer`` hands its batch statistics back
the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import layers

from .weights import canonical_name


# Keras's type promotion (``keras.backend.result_type``, which ``ops.matmul``, ``ops.mean``
# and the torch backend's binary ops compute in) ends with ``BIT64_TO_BIT32_DTYPE``, which
# maps float64 to float32 on every backend but TensorFlow, whatever ``floatx`` or the
# layers' dtype policy says (a known Keras issue: docs/frameworks.md). A float64 model on
# JAX or torch then runs its dense layers, means and BatchNorm statistics in float32. The
# table is private; this is the suite's one write into it.
def keep_float64() -> None:
    """Make Keras's type promotion keep float64 on this process's backend, as JAX (with
    x64 on) and torch themselves do: float32 inputs still promote to float32. Refuses a
    Keras whose table is gone or says otherwise, so a changed Keras is noticed."""
    from keras.src.backend.common import dtypes

    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    if not isinstance(table, dict) or table.get("float64") not in ("float32", "float64"):
        raise RuntimeError(
            f"keras {keras.__version__}: keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE is not the table "
            "impl_keras.engine.keep_float64 expects (float64 -> float32); see keras-team/keras#23704"
        )
    table["float64"] = "float64"


# tf.distribute's replica context (public API): outside any strategy it is the default
# strategy's, one replica whose id is 0.
def replica_id() -> int:
    """The id of the tf.distribute replica running the caller (0 outside a strategy, and
    on a backend other than TensorFlow's)."""
    if keras.backend.backend() != "tensorflow":
        return 0
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    rid = 0 if ctx is None else ctx.replica_id_in_sync_group
    return int(rid if isinstance(rid, int) else tf.get_static_value(rid))


def all_reduce_sum(value):
    """``value`` summed over the replicas in sync (itself outside a strategy, and on a
    backend other than TensorFlow's)."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


class BatchStats:
    """Each BatchNorm's batch mean and (biased) variance of the last training step, by
    ``<unit>.bn.batch_mean`` / ``.batch_var``. Keras has no forward hooks: each
    ``impl_keras.layers.BatchNorm`` is told to keep them (``record``), per replica under
    tf.distribute, and the step runs eagerly so the values exist after it."""

    def __init__(self, model: layers.Layer) -> None:
        self.norms = [layer for layer in walk(model) if isinstance(layer, layers.BatchNormalization)]
        for layer in self.norms:
            layer.record = True

    def last(self) -> dict[str, np.ndarray]:
        stats = {}
        for layer in self.norms:
            mean, var = layer.batch_stats
            stats[f"{canonical_name(layer.name)}.batch_mean"] = keras.ops.convert_to_numpy(mean)
            stats[f"{canonical_name(layer.name)}.batch_var"] = keras.ops.convert_to_numpy(var)
        return stats


# Keras keeps no public walk over nested layers: ``Layer._flatten_layers`` is what
# ``Model.layers`` and saving use. This is the suite's one call into it.
def walk(model: layers.Layer) -> Iterator[layers.Layer]:
    """Every layer in the model's tree, the model included."""
    return model._flatten_layers(include_self=True, recursive=True)


# Keras's SGD keeps its momentums in a list indexed as the variables it was built with
# (``SGD.momentums``, ``Optimizer._get_variable_index``), and each Dropout draws from its
# own ``SeedGenerator`` (``Dropout.seed_generator``), whose state is a variable. The
# trainer's state and reseeding go through these two functions.
def momentums(optimizer: keras.optimizers.Optimizer, variables: list) -> list[tuple]:
    """(variable, its momentum variable) for each of ``variables``; builds the optimizer
    if no step has yet (a resumed run sets the momentums before its first step)."""
    if not optimizer.built:
        optimizer.build(variables)
    moms = getattr(optimizer, "momentums", [])
    return [(v, moms[optimizer._get_variable_index(v)]) for v in variables] if moms else []


def reseed_dropout(model: layers.Layer, seed: int) -> None:
    """Give every Dropout's seed generator a state drawn from ``seed`` (and its place)."""
    droppers = [layer for layer in walk(model) if getattr(layer, "seed_generator", None) is not None]
    states = np.random.SeedSequence(seed).generate_state(len(droppers))
    for layer, state in zip(droppers, states, strict=True):
        generator = layer.seed_generator
        generator.state.assign(np.array([state, 0]).astype(generator.state.dtype))


@contextlib.contextmanager
def op_determinism(on: bool) -> Iterator[None]:
    """Deterministic kernels while the block runs, then as it was. TensorFlow offers only
    ``enable_op_determinism`` (process-wide, for good); the switch back is
    ``tensorflow.python.framework.config.disable_op_determinism``. torch has its own
    switch (``torch.use_deterministic_algorithms``); XLA's CPU kernels, JAX's, are
    deterministic already."""
    if keras.backend.backend() == "torch":
        import torch

        was_torch = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(on or was_torch)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_torch)
        return
    if keras.backend.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    if on and not was:
        config.enable_op_determinism()
    try:
        yield
    finally:
        if on and not was:
            config.disable_op_determinism()


Forward = Callable[[Any, Any], tuple[Any, dict]]  # (x, labels) -> (loss, every output by name)
Gradient = Callable[[Any, Any], tuple[Any, dict, list]]  # (x, labels) -> (loss, outputs, gradients)


def gradient(model: layers.Layer, variables: list, forward: Forward) -> Gradient:
    """The loss, outputs and gradient with respect to ``variables`` of ``forward``, which
    runs ``model`` in training mode, on the backend Keras runs: the three ways Keras's
    "writing a training loop from scratch" guides take. A variable the loss does not
    reach is refused (among the trained ones, a model bug Keras's optimizer would skip
    with only a warning)."""
    run = {"tensorflow": _tape, "torch": _autograd, "jax": _jax}[keras.backend.backend()]
    step = run(model, variables, forward)

    def checked(x, labels):
        loss, out, grads = step(x, labels)
        return loss, out, every_gradient(variables, grads)

    return checked


def every_gradient(variables: list, grads: list) -> list:
    """``grads``, refusing a variable without one (None: TensorFlow's tape and torch's
    autograd say so; JAX's gradient of an unused argument is zeros instead)."""
    missing = [var.path for var, grad in zip(variables, grads, strict=True) if grad is None]
    if missing:
        raise ValueError(f"no gradient reaches {', '.join(missing[:3])}: the loss does not depend on them")
    return grads


def _tape(model: layers.Layer, variables: list, forward: Forward) -> Gradient:
    import tensorflow as tf

    def step(x, labels):
        with tf.GradientTape() as tape:
            loss, out = forward(x, labels)
        return loss, out, tape.gradient(loss, variables)

    return step


def _autograd(model: layers.Layer, variables: list, forward: Forward) -> Gradient:
    """torch's autograd on each variable's tensor (``Variable.value``, a Parameter);
    ``autograd.grad`` leaves no ``.grad`` behind to zero before the next step."""
    import torch

    def step(x, labels):
        loss, out = forward(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels))
        grads = torch.autograd.grad(loss, [var.value for var in variables], allow_unused=True)
        return loss.detach(), {k: v.detach() for k, v in out.items()}, list(grads)

    return step


def _jax(model: layers.Layer, variables: list, forward: Forward) -> Gradient:
    """``jax.value_and_grad`` of ``forward`` run statelessly (``keras.StatelessScope``:
    every variable's value is an argument), compiled by ``jax.jit`` once per input
    shape. What the step assigns (BatchNorm's moving statistics, dropout's seed) comes
    back as values and is assigned after, and so do the batch statistics a recording
    BatchNorm keeps (inside the trace they are tracers)."""
    import jax

    trained = {id(var) for var in variables}
    others = [var for var in model.variables if id(var) not in trained]
    norms = [layer for layer in walk(model) if getattr(layer, "record", False)]

    def compute(values, other_values, x, labels):
        mapping = [*zip(variables, values, strict=True), *zip(others, other_values, strict=True)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, out = forward(x, labels)
            updated = [scope.get_current_value(var) for var in others]
        return loss, (out, updated, [norm.batch_stats for norm in norms])

    compiled = jax.jit(jax.value_and_grad(compute, has_aux=True))

    def step(x, labels):
        values = [var.value for var in variables]
        (loss, (out, updated, kept)), grads = compiled(values, [var.value for var in others], x, labels)
        for var, value in zip(others, updated, strict=True):
            if value is not None:
                var.assign(value)
        for norm, stats in zip(norms, kept, strict=True):
            norm.batch_stats = stats
        return loss, out, list(grads)

    return step
