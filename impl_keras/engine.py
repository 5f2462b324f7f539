"""What Keras's trainer and backend need beside the layers: tf.distribute's replica
context, the walk over nested layers, the optimizer's momentums, dropout's seeds, op
determinism, and the catch of each BatchNorm's batch statistics during a training step.

Mirrors ``impl_torch/engine.py``, ``impl_mxnet/engine.py`` and ``impl_jax/engine.py``:
the same ``BatchStats`` in each, so every ``Trainer`` hands its batch statistics back
the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
from keras import layers


# tf.distribute's replica context (public API): outside any strategy it is the default
# strategy's, one replica whose id is 0.
def replica_id() -> int:
    """The id of the tf.distribute replica running the caller (0 outside a strategy)."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    rid = 0 if ctx is None else ctx.replica_id_in_sync_group
    return int(rid if isinstance(rid, int) else tf.get_static_value(rid))


def all_reduce_sum(value):
    """``value`` summed over the replicas in sync (itself outside a strategy)."""
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
            stats[f"{layer.name}.batch_mean"] = np.asarray(mean)
            stats[f"{layer.name}.batch_var"] = np.asarray(var)
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
    """TensorFlow's op determinism while the block runs, then as it was. TensorFlow
    offers only ``enable_op_determinism`` (process-wide, for good); the switch back is
    ``tensorflow.python.framework.config.disable_op_determinism``."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    if on and not was:
        config.enable_op_determinism()
    try:
        yield
    finally:
        if on and not was:
            config.disable_op_determinism()
