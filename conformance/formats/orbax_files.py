"""Orbax checkpoint directories (``orbax``, ``--to orbax``): what
``ocp.StandardCheckpointer().save(path, state)`` writes for a Flax nnx state (a pure
dict, as ``nnx.to_pure_dict`` gives, or the ``nnx.State`` itself, whose leaves end in
``value``): ``_METADATA`` (JSON: every array's path and shape), ``_CHECKPOINT_METADATA``,
and the arrays as zarr in an OCDBT key-value store (``manifest.ocdbt``,
``ocdbt.process_0/``) or, without OCDBT, a directory each.

Read bounded and without jax: the directory holds only regular files and directories,
bounded in number, depth and bytes; ``_METADATA`` is parsed bounded and its shapes
checked against the plan before tensorstore opens anything; each array's own zarr
metadata (shape, chunks) must then agree before it is read. Written with Orbax (jax),
staged beside DST as a new directory and renamed into place: never half a directory,
never over an existing path. Verified by restoring it with Orbax into an ``impl_jax``
model.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import files, reading
from ..canonical import Params
from ..reading import Damaged, Tensor
from ..spec import Plan
from . import bounds, flax_files
from .base import BackendModel, FileContents, Format, PortError, Written, backend, wiped_model
from .canonical_files import recorded_transform
from .deploy import tree

METADATA = "_METADATA"  # Orbax's tree metadata: every array's path and write shape
# Orbax's record of the save, with the caller's custom_metadata: where the suite's own
# checkpoints keep the variant, transform_input and a SHA-256 of the canonical tensors.
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
RECORD = "googlenet_conformance"  # the suite's key in custom_metadata
MAX_RECORD = 1 << 20  # a _CHECKPOINT_METADATA is a few hundred bytes
MAX_METADATA = 16 << 20  # a GoogLeNet's _METADATA is ~100 KB
MAX_ENTRIES = 4096  # files and directories (OCDBT: ~25; one directory per array without it: ~900)
MAX_DEPTH = 8  # ocdbt.process_0/d/<file>; without OCDBT, zarr3's chunk keys c/0/0/0/0
ARRAY_TYPES = ("jax.Array", "np.ndarray")  # Orbax's value_type of an array leaf


def looks_like(path: Path) -> bool:
    """A directory holding Orbax's ``_METADATA`` as a regular file."""
    return stat.S_ISREG(os.lstat(path / METADATA).st_mode) if os.path.lexists(path / METADATA) else False


def check_directory(path: Path, limit: bounds.Budget) -> None:
    """Regular files and directories only, at most :data:`MAX_ENTRIES`, nested at most
    :data:`MAX_DEPTH` deep, no more bytes than a checkpoint of the plan holds."""
    problem = files.directory_problem(path, MAX_ENTRIES, MAX_DEPTH, limit.total + MAX_METADATA, "an Orbax checkpoint")
    if problem:
        raise Damaged(problem)


def metadata(path: Path, limit: bounds.Budget) -> tuple[dict[tuple[str, ...], tuple[int, ...]], bool, bool]:
    """(every array's path -> its write shape, OCDBT, zarr3) from ``_METADATA``, parsed
    bounded: its size, its entry count, each key and shape."""
    size = (path / METADATA).stat().st_size
    if size > MAX_METADATA:
        raise Damaged(f"its {METADATA} is {size:,} bytes; a GoogLeNet's is about 100 KB (at most {MAX_METADATA:,})")
    try:
        document = json.loads((path / METADATA).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Damaged(f"its {METADATA} is not JSON ({e})") from None
    entries = document.get("tree_metadata") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise Damaged(f"its {METADATA} has no tree_metadata (an Orbax PyTree checkpoint has one)")
    if len(entries) > 4 * limit.count:
        raise Damaged(f"its {METADATA} lists {len(entries):,} arrays; this network has at most {limit.count:,}")
    shapes: dict[tuple[str, ...], tuple[int, ...]] = {}
    for name, entry in entries.items():
        keys = entry.get("key_metadata") if isinstance(entry, dict) else None
        value = entry.get("value_metadata") if isinstance(entry, dict) else None
        if not isinstance(keys, list) or not isinstance(value, dict) or not 0 < len(keys) <= flax_files.MAX_DEPTH:
            raise Damaged(f"its {METADATA} entry {str(name)[:200]!r} is not Orbax's (key_metadata, value_metadata)")
        parts = tuple(str(k.get("key")) for k in keys if isinstance(k, dict) and isinstance(k.get("key"), str))
        if len(parts) != len(keys) or not all(0 < len(p) <= flax_files.MAX_KEY for p in parts):
            raise Damaged(f"its {METADATA} entry {str(name)[:200]!r} has a key that is not a module's name")
        shape = value.get("write_shape")
        if value.get("value_type") not in ARRAY_TYPES or not isinstance(shape, list) or len(shape) > 8:
            raise Damaged(f"{'/'.join(parts)[:200]!r} is not an array (value_type {value.get('value_type')!r})")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise Damaged(f"{'/'.join(parts)[:200]!r} declares the shape {shape}; expected dimensions >= 0")
        shapes[parts] = tuple(shape)
    return shapes, document.get("use_ocdbt") is not False, document.get("use_zarr3") is True


def _tensorstore():
    try:
        import tensorstore
    except ImportError:
        raise PortError(
            "tensorstore is needed to read an Orbax checkpoint and is not installed: pip install tensorstore"
        ) from None
    return tensorstore


def _read_orbax(path: Path, plan: Plan) -> FileContents:
    limit = bounds.ceiling(plan)
    check_directory(path, limit)
    shapes, ocdbt, zarr3 = metadata(path, limit)
    # float64 for every array: the largest a weight can be, before any dtype is known
    bounds.check_sizes(path, {"/".join(k): Tensor(s, np.dtype(np.float64), _unread) for k, s in shapes.items()}, limit)
    ts = _tensorstore()
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}, "data_copy_concurrency": {"limit": 1}})
    base = {"driver": "file", "path": str(path.absolute()) + "/"}
    flat: dict[tuple[str, ...], Tensor] = {}
    for parts, shape in shapes.items():
        name = ".".join(parts)  # Orbax's parameter name: the path joined with dots
        kvstore = (
            {"driver": "ocdbt", "base": base, "path": name} if ocdbt else {**base, "path": f"{base['path']}{name}"}
        )
        store = ts.open(
            {"driver": "zarr3" if zarr3 else "zarr", "kvstore": kvstore}, open=True, read=True, context=context
        ).result()
        chunk = tuple(store.chunk_layout.read_chunk.shape or shape)
        if tuple(store.shape) != shape or any(c > max(d, 1) for c, d in zip(chunk, shape, strict=False)):
            raise Damaged(
                f"{'/'.join(parts)[:200]!r}: its zarr metadata declares {list(store.shape)} in chunks of "
                f"{list(chunk)}, where {METADATA} says {list(shape)}"
            )
        flat[parts] = _tensor(store, shape)
    contents = flax_files.state_contents(flat, "Orbax")
    bounds.check_sizes(path, contents.tensors, limit)
    record = _record(path)
    digest, variant = record.get("sha256"), record.get("variant")
    contents.digest = digest if isinstance(digest, str) else None
    contents.variant = variant if isinstance(variant, str) else None
    contents.transform_input = recorded_transform(record.get("transform_input"))
    return contents


def _record(path: Path) -> dict[str, Any]:
    """The suite's record in ``_CHECKPOINT_METADATA``'s custom_metadata ({} where there is
    none: a checkpoint another program saved)."""
    where = path / CHECKPOINT_METADATA
    if not where.is_file() or where.stat().st_size > MAX_RECORD:
        return {}
    try:
        document = json.loads(where.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Damaged(f"its {CHECKPOINT_METADATA} is not JSON ({e})") from None
    custom = document.get("custom_metadata") if isinstance(document, dict) else None
    record = custom.get(RECORD) if isinstance(custom, dict) else None
    return record if isinstance(record, dict) else {}


def _unread() -> np.ndarray:
    raise AssertionError("a declaration only")


def _tensor(store: Any, shape: tuple[int, ...]) -> Tensor:
    dtype = np.dtype(store.dtype.numpy_dtype)
    if dtype.name == "bfloat16":
        return Tensor(shape, "bfloat16", lambda: np.asarray(store.read().result()).astype(np.float32))
    if dtype.kind not in "fiu":
        return Tensor(shape, dtype.name, _unread, f"of dtype {dtype.name}, not a weight's")
    return Tensor(shape, dtype, lambda: np.asarray(store.read().result()))


def _write_orbax(params: Params, plan: Plan) -> Written:
    backend("jax")
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    state = flax_files.state_tree(params)
    arrays = _mapped(state, jnp.asarray)  # jax arrays, as a Flax model's state holds them
    with tempfile.TemporaryDirectory(prefix="conformance-orbax-") as tmp, ocp.StandardCheckpointer() as saver:
        record = {"variant": plan.variant.name, **plan.options.asdict(), "sha256": reading.tensor_digest(params)}
        saver.save(Path(tmp) / "model", arrays, custom_metadata={RECORD: record})
        saver.wait_until_finished()
        return tree(Path(tmp) / "model"), None


def _mapped(node: dict[str, Any], function: Any) -> dict[str, Any]:
    return {k: _mapped(v, function) if isinstance(v, dict) else function(v) for k, v in node.items()}


def _load_orbax(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    import orbax.checkpoint as ocp

    package, model = wiped_model("jax", plan, into)
    with ocp.StandardCheckpointer() as restorer:
        state = restorer.restore(path.absolute())  # the directory port wrote
    return flax_files.load_state(package, model, state)


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("orbax", (), "Orbax checkpoint", "jax", ("orbax",),
           _read_orbax, _write_orbax, _load_orbax, layout="directory", checksum="digest",
           keeps_transform=f"its {CHECKPOINT_METADATA}'s custom_metadata",
           loading="import os, orbax.checkpoint as ocp; from flax import nnx; " + flax_files.LOADING_STATE
                   + "nnx.replace_by_pure_dict(state, ocp.StandardCheckpointer().restore(os.path.abspath({path}))); "
                   + flax_files.LOADING_UPDATE),
)
# fmt: on
