"""Canonical <-> Flax weights: every module sits at its canonical path (``model.py``),
so a variable's path is its canonical key with Flax's name for the variable at the
end, and each conversion is a pure permutation (a round trip is bit-identical):

* conv kernels: canonical (out, in, kh, kw) <-> Flax's HWIO (kh, kw, in, out);
* dense kernels: canonical (out, in) <-> Flax's (in, out);
* biases and BatchNorm's scale, shift and statistics: the same vectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from conformance.canonical import CanonicalError, canonical_shapes, flax_key, from_flax, to_flax, validate

# The names and layouts are conformance.canonical's (flax_key, to_flax, from_flax): the
# Orbax and msgpack formats read and write them without importing jax.
canonical_key = flax_key


def located(model) -> Iterator[tuple[str, nnx.Variable]]:
    """(canonical key, Flax variable) for every parameter and running statistic; an error
    if the model and the plan disagree (a bug in model.py)."""
    found = {
        canonical_key(path): variable
        for path, variable in nnx.iter_graph(model)
        if isinstance(variable, (nnx.Param, nnx.BatchStat))
    }
    expected = canonical_shapes(model.plan)
    if set(found) != set(expected):
        raise RuntimeError(
            f"Flax model {model.plan.variant.name}: variables without a canonical key "
            f"{sorted(set(found) - set(expected))[:3]}, canonical keys without a variable "
            f"{sorted(set(expected) - set(found))[:3]}"
        )
    return ((key, found[key]) for key in expected)


def to_canonical(model) -> dict[str, np.ndarray]:
    return {key: np.ascontiguousarray(from_flax(np.asarray(var.value))) for key, var in located(model)}


def from_canonical(model, params: Mapping[str, np.ndarray]) -> None:
    validate(model.plan, params)
    for key, var in located(model):
        value = to_flax(np.asarray(params[key]))
        if tuple(var.value.shape) != value.shape:
            raise CanonicalError(f"{key!r}: converted to {value.shape}, Flax variable is {tuple(var.value.shape)}")
        var.value = jnp.asarray(value, var.value.dtype)
