"""Canonical <-> Gluon parameters: Gluon's structural names (what ``save_parameters``
writes) are the canonical names, except BatchNorm's scale and shift
(``conformance.canonical.gluon_name``)."""

from __future__ import annotations

from collections.abc import Mapping

import mxnet as mx
import numpy as np

from conformance.canonical import CanonicalError, canonical_shapes, gluon_name, validate
from conformance.spec import Plan

from .engine import structural_params


def located(model, plan: Plan) -> list[tuple[str, mx.gluon.Parameter]]:
    """(canonical key, Gluon parameter) for every key; an error if the model and the
    plan disagree (a bug in model.py)."""
    params = structural_params(model)  # the names save_parameters uses
    names = {key: gluon_name(key) for key in canonical_shapes(plan)}
    # a BatchNorm without scale (TF-slim's) keeps a gamma the operator ignores (fix_gamma)
    ignored = {gluon_name(f"{u.name}.bn.weight") for u in plan.conv_units() if u.norm is not None and not u.norm.scale}
    unmapped = set(params) - set(names.values()) - ignored
    missing = [k for k, n in names.items() if n not in params]
    if unmapped or missing:  # the model and the plan disagree: a bug in model.py
        raise RuntimeError(
            f"Gluon model: parameters without a canonical key {sorted(unmapped)[:3]}, "
            f"canonical keys without a parameter {missing[:3]}"
        )
    return [(key, params[name]) for key, name in names.items()]


def to_canonical(model) -> dict[str, np.ndarray]:
    # An inference call re-lays a convolution's weight in place, queued in a way a read
    # does not wait for (apache/mxnet#15555): read once every queued operation is done.
    mx.nd.waitall()
    return {key: param.data().asnumpy() for key, param in located(model, model.plan)}


def from_canonical(model, params: Mapping[str, np.ndarray]) -> None:
    validate(model.plan, params)
    for key, param in located(model, model.plan):
        if tuple(param.shape) != params[key].shape:
            raise CanonicalError(
                f"{key!r}: Gluon parameter {gluon_name(key)} is {param.shape}, got {params[key].shape}"
            )
        param.set_data(mx.nd.array(params[key], dtype=np.float32))
