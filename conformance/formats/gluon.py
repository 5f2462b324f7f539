"""Gluon's ``.params`` files, read bounded: the declared arrays are checked before MXNet
reads the file (``save_parameters``' names, GluonCV's, or the Module API's ``arg:``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import reading
from ..canonical import gluon_name
from ..reading import Tensor
from ..spec import Plan
from . import bounds, naming
from .base import PortError, Raw, backend


def read_params(path: Path, p: Plan) -> Raw:
    limit = bounds.ceiling(p)
    declared = reading.mxnet_params(path, limit.count)
    bounds.check_sizes(path, declared, limit)
    loaded: dict[str, np.ndarray] = {}

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if not loaded:  # MXNet reads the whole file at once; its sizes were checked
                backend("mxnet")
                import mxnet as mx

                arrays = mx.nd.load(str(path))
                if not isinstance(arrays, dict):
                    raise PortError(f"{path}: holds an unnamed list of arrays, not named Gluon parameters")
                loaded.update({k: v.asnumpy() for k, v in arrays.items()})
            value = loaded[name]
            return reading.bfloat16_to_float32(value.view("<u2")) if declared[name].dtype == "bfloat16" else value

        return load

    tensors = {k.split(":", 1)[-1]: Tensor(t.shape, t.dtype, loader(k), t.problem) for k, t in declared.items()}
    if len(tensors) != len(declared):
        raise PortError(f"{path}: two arrays have the same name once 'arg:' / 'aux:' is removed")
    # A BatchNorm without scale (TF-slim's) keeps a gamma Gluon saves and its operator
    # ignores (fix_gamma): not a weight of the network, whatever it holds.
    fixed = {gluon_name(f"{u.name}.bn.weight") for u in p.conv_units() if u.norm is not None and not u.norm.scale}
    dropped = [k for k in tensors if k in fixed]
    for k in dropped:
        del tensors[k]
    notes = [f"dropped {len(dropped)} BatchNorm gammas Gluon keeps for a BatchNorm without scale (unused)"]
    return Raw(tensors, naming.detect(tensors), notes if dropped else [])  # "arg:" from the Module API removed
