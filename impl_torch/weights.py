"""Canonical <-> PyTorch weights: the state_dict already uses canonical names and
layouts, so the adapter only drops ``num_batches_tracked`` (a training-step counter,
not a weight)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from conformance.canonical import validate


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def to_canonical(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in _state(model).items()}


def from_canonical(model, params: Mapping[str, np.ndarray]) -> None:
    validate(model.plan, params)
    with torch.no_grad():
        for key, tensor in _state(model).items():
            tensor.copy_(torch.from_numpy(np.asarray(params[key])))
