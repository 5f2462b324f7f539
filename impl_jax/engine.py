"""What the JAX trainer needs beside the layers: the catch of each BatchNorm's batch
statistics during a training step.

Mirrors ``impl_torch/engine.py``, ``impl_keras/engine.py`` and ``impl_mxnet/engine.py``:
the same ``BatchStats`` in each, so every ``Trainer`` hands its batch statistics back
the same way.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx


class Recorded(nnx.Variable):
    """A batch statistic kept for ``BatchStats``: state of the model, so it leaves a
    jitted step with it, but neither a parameter nor a running statistic."""


class BatchStats:
    """Each BatchNorm's batch mean and (biased) variance of the last training step, by
    ``<unit>.bn.batch_mean`` / ``.batch_var``. A jitted step has no hooks and returns
    only state: each ``impl_jax.layers.BatchNormalization`` is given two ``Recorded``
    variables to write, which the step hands back with the model's state."""

    def __init__(self, model: nnx.Module) -> None:
        for _, module in nnx.iter_graph(model):
            if isinstance(module, nnx.Module) and hasattr(module, "batch_mean") and hasattr(module, "mean"):
                norm: Any = module  # a BatchNormalization (layers.py imports this file, not the reverse)
                # made in numpy: jnp.zeros_like compiles a fill for every shape
                norm.batch_mean = Recorded(jnp.asarray(np.zeros(norm.mean.value.shape, norm.mean.value.dtype)))
                norm.batch_var = Recorded(jnp.asarray(np.zeros(norm.var.value.shape, norm.var.value.dtype)))
        self.model = model

    def last(self) -> dict[str, np.ndarray]:
        stats = {}
        for path, module in nnx.iter_graph(self.model):
            if isinstance(getattr(module, "batch_mean", None), Recorded):
                prefix = ".".join(map(str, path))
                stats[f"{prefix}.batch_mean"] = np.asarray(module.batch_mean.value)
                stats[f"{prefix}.batch_var"] = np.asarray(module.batch_var.value)
        return stats
