"""Flax's msgpack state (``flax-msgpack``, ``.msgpack``): what
``flax.serialization.to_bytes(nnx.to_pure_dict(nnx.state(model, (nnx.Param,
nnx.BatchStat))))`` writes, a nested map keyed by module path (``conv1`` -> ``conv`` ->
``kernel``) whose leaves are Flax's array extension (type 1: shape, dtype name, bytes).
Also what Flax states share with Orbax's (``orbax_files``): the state as canonical
tensors (:func:`state_contents`), and a state from canonical tensors (:func:`state_tree`).

Read without Flax and without jax: the bytes are parsed by msgpack's ``Unpacker`` with
every length bounded by what a file of the plan can hold (maps, strings, the array
extension) and the nesting bounded, before any array is made (never Flax's
``msgpack_restore``, which trusts every length). Written without jax too, byte for byte
as Flax writes it; verified by loading it with Flax (``msgpack_restore``) into an
``impl_jax`` model. Kernels are Flax's: conv HWIO, dense (in, out); the names and
layouts are ``conformance.canonical``'s (``flax_path``, ``to_flax``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import reading
from ..canonical import Params, flax_key, flax_path, from_flax, to_flax
from ..reading import Damaged, Tensor
from ..spec import Plan
from . import bounds
from .base import LOADING_BUILT, BackendModel, FileContents, Format, PortError, Written, wiped_model

MAX_DEPTH = 12  # maps inside maps: GoogLeNet's deepest variable, inception3a/branch2/1/conv/kernel/value, is 6
MAX_KEY = 1024  # characters of one key (a module's or variable's name)
MAX_DIMS = 8  # dimensions of one array (a weight has at most 4)
TRUNCATED = "truncated: the msgpack data ends inside a value (or a value declares more bytes than the file holds)"
NDARRAY, SCALAR = 1, 3  # Flax's msgpack extension types: an array, a numpy scalar
# dtype names an array may declare; any other is reported, never handed to numpy
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
# What a Flax state holds beside the weights: the dropout's random state (nnx.Rngs).
RNG_PARTS = ("key", "count")


def _msgpack():
    try:
        import msgpack
    except ImportError:
        raise PortError("msgpack is needed for Flax msgpack files and is not installed: pip install msgpack") from None
    return msgpack


@dataclass
class _Map:
    """A map as parsed, with how deep it nests (counted as it is built, from the inside out)."""

    items: dict[str, Any]
    depth: int


def _array(payload: bytes, limit: bounds.Budget) -> Tensor:
    """Flax's array extension (``msgpack.packb((shape, dtype name, bytes))``) as a declared
    tensor, its length checked against its shape before anything is made of it."""
    msgpack = _msgpack()
    try:
        shape, name, data = msgpack.unpackb(
            payload,
            raw=True,
            max_array_len=MAX_DIMS,
            max_str_len=64,
            max_bin_len=limit.tensor,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError) as e:
        raise Damaged(f"an array's header is not Flax's (shape, dtype, bytes): {reading_error(e)}") from None
    if not isinstance(name, bytes) or not isinstance(data, bytes) or not isinstance(shape, list):
        raise Damaged("an array's header is not Flax's (shape, dtype, bytes)")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise Damaged(f"an array declares the shape {shape[:MAX_DIMS]}; expected dimensions >= 0")
    dtype_name = name.decode("ascii", "replace")
    dims = tuple(shape)
    if dtype_name == "bfloat16":
        return _checked(Tensor(dims, "bfloat16", lambda: reading.bfloat16_to_float32(np.frombuffer(data, "<u2"))), data)
    if dtype_name not in DTYPES:
        return Tensor(dims, dtype_name[:20], reading.never_loaded, f"of dtype {dtype_name[:20]!r}, not a weight's")
    dtype = np.dtype(dtype_name)
    return _checked(Tensor(dims, dtype, lambda: np.frombuffer(data, dtype).reshape(dims)), data)


def _checked(tensor: Tensor, data: bytes) -> Tensor:
    if tensor.nbytes != len(data):
        raise Damaged(
            f"an array declares {tensor.dtype} {list(tensor.shape)} ({tensor.nbytes:,} bytes) but holds {len(data):,}"
        )
    return tensor


def reading_error(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def parse(data: bytes, limit: bounds.Budget) -> dict[tuple[str, ...], Tensor]:
    """The state's arrays by path, parsed bounded: each map at most ``limit.count``
    entries and all maps together a few times that, keys strings of at most
    :data:`MAX_KEY` characters, maps nested at most :data:`MAX_DEPTH` deep (checked as
    each map closes), an array's extension at most ``limit.tensor`` bytes."""
    msgpack = _msgpack()
    entries = 0

    def closed(pairs: list[tuple[Any, Any]]) -> _Map:
        nonlocal entries
        entries += len(pairs)
        if entries > 4 * limit.count:
            raise Damaged(f"holds more than {4 * limit.count:,} entries; a Flax state of this network has fewer")
        if not all(isinstance(key, str) for key, _ in pairs):
            raise Damaged("a map has a key that is not a string; a Flax state is keyed by module and variable names")
        depth = 1 + max((value.depth for _, value in pairs if isinstance(value, _Map)), default=0)
        if depth > MAX_DEPTH:
            raise Damaged(f"maps nest deeper than {MAX_DEPTH}; a Flax state of GoogLeNet nests at most 6 deep")
        return _Map(dict(pairs), depth)

    def extension(code: int, payload: bytes) -> object:
        return _array(payload, limit) if code in (NDARRAY, SCALAR) else f"msgpack extension type {code}"

    try:
        root = msgpack.unpackb(
            data,
            raw=False,
            object_pairs_hook=closed,
            ext_hook=extension,
            max_str_len=MAX_KEY,
            max_bin_len=0,  # a Flax state keeps bytes only inside its arrays
            max_array_len=MAX_DIMS,
            max_map_len=limit.count,
            max_ext_len=limit.tensor + 4096,
            strict_map_key=False,  # a non-string key is reported by closed(), not by msgpack
        )
    except Damaged:
        raise
    except msgpack.OutOfData:
        raise Damaged(TRUNCATED) from None
    except msgpack.ExtraData:
        raise Damaged("holds bytes after the state's map (not one msgpack value)") from None
    except msgpack.StackError:
        raise Damaged(f"maps nest deeper than {MAX_DEPTH}; a Flax state of GoogLeNet nests at most 6 deep") from None
    except (ValueError, TypeError) as e:  # a declared length above its bound, or bytes msgpack cannot parse
        if "incomplete input" in str(e):  # unpackb's word for data that ends inside a value
            raise Damaged(TRUNCATED) from None
        raise Damaged(f"not a bounded Flax msgpack state: {reading_error(e)}") from None
    if not isinstance(root, _Map):
        raise Damaged(f"holds a msgpack {type(root).__name__}, not the map of a Flax state")
    flat: dict[tuple[str, ...], Tensor] = {}
    stack: list[tuple[tuple[str, ...], _Map]] = [((), root)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items.items():
            at = (*prefix, key)
            if isinstance(value, _Map):
                stack.append((at, value))
            elif isinstance(value, Tensor):
                flat[at] = value
            else:
                what = value if isinstance(value, str) else f"a {type(value).__name__}"
                raise Damaged(f"{'/'.join(at)[:200]!r} holds {what}, where a Flax state holds arrays")
    return flat


def state_contents(flat: Mapping[tuple[str, ...], Tensor], where: str) -> FileContents:
    """A Flax state's arrays (by path, Flax layouts) as canonical tensors: a trailing
    ``value`` (an ``nnx.State`` saved as it is) dropped, the dropout's random state left
    out, every other path renamed by Flax's names (a path no weight has keeps its own,
    and is then reported as unexpected), kernels permuted back (conv HWIO -> OIHW, dense
    (in, out) -> (out, in)) when read."""
    tensors: dict[str, Tensor] = {}
    rngs = 0
    for path, tensor in flat.items():
        parts = path[:-1] if len(path) > 1 and path[-1] == "value" else path
        if len(parts) > 1 and parts[-2] == "rngs" and parts[-1] in RNG_PARTS:
            rngs += 1
            continue
        try:
            key, shape, load = flax_key(parts), _canonical_shape(tensor.shape), _permuted(tensor.load)
        except KeyError:  # no weight's name: kept as it is, reported as unexpected
            key, shape, load = "/".join(parts), tensor.shape, tensor.load
        if key in tensors:
            raise Damaged(f"two arrays are {key!r} ({'/'.join(path)[:200]!r} and another)")
        said = f"{where} {'/'.join(path)} {list(tensor.shape)}"
        tensors[key] = Tensor(shape, tensor.dtype, load, tensor.problem, where=said)
    notes = [f"left out the dropout's random state ({rngs} arrays: nnx.Rngs, not weights)"] if rngs else []
    return FileContents(tensors, "canonical", notes)


def _canonical_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Flax shape in canonical order (what ``canonical.from_flax`` makes of it)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _permuted(load: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(from_flax(np.asarray(load())))


def state_tree(params: Params) -> dict[str, Any]:
    """Canonical tensors as the nested state ``nnx.to_pure_dict`` gives (Flax names and
    layouts), each map's keys sorted as Flax sorts a state's."""
    tree: dict[str, Any] = {}
    for key, value in params.items():
        *modules, name = flax_path(key, value.ndim)
        node = tree
        for module in modules:
            node = node.setdefault(module, {})
        node[name] = np.ascontiguousarray(to_flax(np.asarray(value, np.float32)))

    def ordered(node: dict[str, Any]) -> dict[str, Any]:
        return {k: ordered(v) if isinstance(v, dict) else v for k, v in sorted(node.items())}

    return ordered(tree)


def _read_msgpack(path: Path, plan: Plan) -> FileContents:
    limit = bounds.ceiling(plan)
    size = path.stat().st_size
    if size > limit.total:
        raise Damaged(f"{size:,} bytes is more than any Flax state of {plan.variant.name} holds ({limit.describe()})")
    flat = parse(path.read_bytes(), limit)
    contents = state_contents(flat, "msgpack")
    bounds.check_sizes(path, contents.tensors, limit)
    return contents


def _write_msgpack(params: Params, plan: Plan) -> Written:
    msgpack = _msgpack()

    def extension(value: object) -> object:
        if isinstance(value, np.ndarray):  # as flax.serialization._ndarray_to_bytes packs it
            header = (value.shape, value.dtype.name, value.tobytes("C"))
            return msgpack.ExtType(NDARRAY, msgpack.packb(header, use_bin_type=True))
        return value

    return msgpack.packb(state_tree(params), default=extension, strict_types=True), None


def load_state(package, model, state: dict[str, Any]) -> BackendModel:
    """A pure-dict state put into an ``impl_jax`` model, as a Flax user restores one
    (``nnx.replace_by_pure_dict`` then ``nnx.update``)."""
    from flax import nnx

    target = nnx.state(model)
    nnx.replace_by_pure_dict(target, state)
    nnx.update(model, target)
    return package, model


def _load_msgpack(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    from flax import serialization

    package, model = wiped_model("jax", plan, into)
    return load_state(package, model, serialization.msgpack_restore(path.read_bytes()))  # the file port wrote


LOADING_STATE = LOADING_BUILT + "state = nnx.state(model); "
LOADING_UPDATE = "nnx.update(model, state)"

# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("flax-msgpack", (".msgpack",), "Flax msgpack state", "jax", ("msgpack",),
           _read_msgpack, _write_msgpack, _load_msgpack,
           loading="from flax import nnx, serialization; " + LOADING_STATE
                   + "nnx.replace_by_pure_dict(state, serialization.msgpack_restore(open({path}, 'rb').read())); "
                   + LOADING_UPDATE),
)
# fmt: on
