"""Canonical <-> Keras weights: one table row per canonical key.

Each row names the Keras layer (its canonical prefix, in Keras's spelling:
:func:`keras_name`), the Keras variable and the two layout conversions. Every
conversion is a pure permutation, so a round trip is bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from conformance.canonical import CanonicalError, bn_suffixes, conv_key, validate
from conformance.spec import Dense, Plan

Convert = Callable[[np.ndarray], np.ndarray]


def oihw_to_hwio(weight: np.ndarray) -> np.ndarray:
    """PyTorch conv kernel (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return weight.transpose(2, 3, 1, 0)


def hwio_to_oihw(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(3, 2, 0, 1)


def dense_to_keras(dense: Dense) -> Convert:
    """(out, in) -> (in, out); after a flatten, rows re-ordered from (C, H, W) to (H, W, C)."""
    if dense.flattened_from is None:
        return lambda w: w.T
    c, h, w_ = dense.flattened_from
    return lambda w: w.reshape(dense.out_features, c, h, w_).transpose(2, 3, 1, 0).reshape(-1, dense.out_features)


def dense_from_keras(dense: Dense) -> Convert:
    if dense.flattened_from is None:
        return lambda k: k.T
    c, h, w_ = dense.flattened_from
    return lambda k: k.reshape(h, w_, c, dense.out_features).transpose(3, 2, 0, 1).reshape(dense.out_features, -1)


# Keras's torch backend keys each layer's variables by their path in a torch
# ParameterDict, which refuses "."; so a Keras layer spells its canonical name with
# "-" (``inception3a-branch2-1-conv``). No canonical name holds "-", so the two
# spellings map one to one; files written before the change hold the dotted names,
# which :func:`canonical_name` reads too.
SEPARATOR = "-"


def keras_name(canonical: str) -> str:
    """The Keras layer name of a canonical prefix: ``inception3a.branch2.1.conv`` ->
    ``inception3a-branch2-1-conv``."""
    if SEPARATOR in canonical:
        raise ValueError(f"canonical name {canonical!r} holds {SEPARATOR!r}, which Keras names use for '.'")
    return canonical.replace(".", SEPARATOR)


def canonical_name(keras: str) -> str:
    """The canonical prefix of a Keras layer name, in either spelling (dotted or dashed)."""
    return keras.replace(SEPARATOR, ".")


def same(array: np.ndarray) -> np.ndarray:
    return array


class Row(NamedTuple):
    layer: str  # Keras layer name
    variable: str  # Keras variable name
    to_keras: Convert
    to_canonical: Convert


BN_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def table(plan: Plan) -> dict[str, Row]:
    """Canonical key -> where it lives in the Keras model and how it is laid out."""
    rows: dict[str, Row] = {}
    for u in plan.units():
        if isinstance(u, Dense):
            rows[f"{u.name}.weight"] = Row(keras_name(u.name), "kernel", dense_to_keras(u), dense_from_keras(u))
            rows[f"{u.name}.bias"] = Row(keras_name(u.name), "bias", same, same)
            continue
        conv = conv_key(u)
        rows[f"{conv}.weight"] = Row(keras_name(conv), "kernel", oihw_to_hwio, hwio_to_oihw)
        if u.bias:
            rows[f"{conv}.bias"] = Row(keras_name(conv), "bias", same, same)
        for ours in bn_suffixes(u) if u.norm is not None else ():  # no gamma without a scale (TF-slim's)
            rows[f"{u.name}.bn.{ours}"] = Row(keras_name(f"{u.name}.bn"), BN_VARIABLES[ours], same, same)
    return rows


def _variables(model) -> dict[tuple[str, str], Any]:
    """(layer name, variable name) -> variable; a Keras path ends ``<layer>/<variable>``."""
    found = {tuple(v.path.split("/")[-2:]): v for v in model.weights}
    if len(found) != len(model.weights):
        raise RuntimeError(f"{model.name}: two Keras variables share a layer and variable name")
    return found


def located(model, plan: Plan) -> list[tuple[str, Row, Any]]:
    """(canonical key, table row, Keras variable) for every key; an error if the model
    and the plan disagree (a bug in model.py)."""
    variables = _variables(model)
    rows = table(plan)
    unmapped = set(variables) - {(r.layer, r.variable) for r in rows.values()}
    missing = [k for k, r in rows.items() if (r.layer, r.variable) not in variables]
    if unmapped or missing:  # the model and the plan disagree: a bug in model.py
        raise RuntimeError(
            f"Keras model {model.name}: variables without a canonical key "
            f"{sorted(unmapped)[:3]}, canonical keys without a variable {missing[:3]}"
        )
    return [(key, row, variables[(row.layer, row.variable)]) for key, row in rows.items()]


def to_canonical(model) -> dict[str, np.ndarray]:
    return {
        key: np.ascontiguousarray(row.to_canonical(np.asarray(var.numpy())))
        for key, row, var in located(model, model.plan)
    }


def from_canonical(model, params: Mapping[str, np.ndarray]) -> None:
    validate(model.plan, params)
    for key, row, var in located(model, model.plan):
        value = row.to_keras(params[key])
        if tuple(var.shape) != value.shape:
            raise CanonicalError(
                f"{key!r}: converted to {value.shape}, Keras variable {row.layer}/{row.variable} is {tuple(var.shape)}"
            )
        var.assign(value)
