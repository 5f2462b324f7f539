"""Gluon's ``.params`` files (``mxnet``: ``save_parameters`` / ``load_parameters``;
``gluoncv``: GluonCV's names), read bounded: the declared arrays are checked before
MXNet reads the file (``save_parameters``' names, GluonCV's, or the Module API's
``arg:``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .. import mxnet_reading, reading
from ..canonical import Params, gluon_name
from ..reading import Tensor
from ..spec import Plan
from . import bounds, naming
from .base import (
    LOADING_BUILT,
    LOADING_MXNET,
    BackendModel,
    FileContents,
    Format,
    PortError,
    Written,
    backend,
    built,
    load_by_name,
    wiped_model,
)


def read_params(path: Path, plan: Plan) -> FileContents:
    limit = bounds.ceiling(plan)
    declared = mxnet_reading.mxnet_params(path, limit.count)
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
    fixed = {gluon_name(f"{u.name}.bn.weight") for u in plan.conv_units() if u.norm is not None and not u.norm.scale}
    dropped = [k for k in tensors if k in fixed]
    for k in dropped:
        del tensors[k]
    notes = [f"dropped {len(dropped)} BatchNorm gammas Gluon keeps for a BatchNorm without scale (unused)"]
    return FileContents(tensors, naming.detect(tensors), notes if dropped else [])  # "arg:" from the Module API removed


@contextlib.contextmanager
def _memory_file() -> Iterator[tuple[str, Callable[[], bytes]]]:
    """A path whose writes stay in memory, for writers that take only a path (MXNet):
    a Linux memfd, else a file in the temporary directory. The disk is then written once,
    by ``files.Temporary``, which handles a full one."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("conformance", os.MFD_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}", lambda: os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as d:  # pragma: no cover - not Linux
        path = Path(d) / "file"
        yield str(path), path.read_bytes


def _write_mxnet(params: Params, plan: Plan) -> Written:
    b, model = built("mxnet", plan, params)
    with _memory_file() as (path, contents):
        model.save_parameters(path)
        return contents(), (b, model)


def _load_mxnet(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    b, model = wiped_model("mxnet", plan, into)
    model.load_parameters(str(path))  # strict: no missing, no extra parameter
    return b, model


def _write_gluoncv(params: Params, plan: Plan) -> Written:
    backend("mxnet")
    import mxnet as mx

    renamed = naming.from_canonical(params, "gluoncv", plan)
    with _memory_file() as (path, contents):
        mx.nd.save(path, {k: mx.nd.array(v, dtype=np.float32) for k, v in renamed.items()})
        return contents(), None


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("mxnet", (".params",), "MXNet Gluon parameters", "mxnet", ("mxnet",),
           read_params, _write_mxnet, _load_mxnet, loading=LOADING_BUILT + "model.load_parameters({path})"),
    # Only by name (--to gluoncv): .params files are read whatever their naming.
    Format("gluoncv", (".params",), "GluonCV parameters", "mxnet", ("mxnet",),
           read_params, _write_gluoncv, load_by_name(read_params, "mxnet"),
           loading=LOADING_MXNET + "arrays = mxnet.nd.load({path})  "
                   "# GluonCV's names: gluoncv.model_zoo.googlenet().load_parameters(path) loads them"),
)
# fmt: on
