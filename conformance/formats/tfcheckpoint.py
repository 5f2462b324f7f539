"""TensorFlow checkpoints (TF1 ``Saver`` / ``tf.train.Checkpoint`` bundles), read only.

A checkpoint is a prefix (``inception_v1.ckpt``) naming an ``.index`` file (a table of
every variable's dtype, shape and place) and ``.data-NNNNN-of-MMMMM`` shards holding the
values; the ``.meta`` graph beside it is never opened, so nothing in it runs. TensorFlow's
own reader (``tf.train.load_checkpoint``) reads the index; what it declares is checked
against the spec and against the shards' sizes before any value is read, and each
value is then read alone (TensorFlow checks its CRC32C).

Layouts are TensorFlow's: conv kernels (kh, kw, in, out), and TF-slim's classifier a
1x1 conv (1, 1, in, classes); both become the canonical (out, in, kh, kw) and
(classes, in) here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..canonical import Params, canonical_shapes
from ..frameworks import quiet_stderr
from ..reading import Damaged, Tensor
from ..spec import Plan
from . import bounds, naming
from .base import FileContents, Format, PortError, Written, load_by_name

INDEX_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")  # the table footer's last 8 bytes (LevelDB's)
MAX_INDEX = 4 << 20  # TF-slim's inception_v1 index is ~20 KB (230 names, shapes and offsets)
COUNTERS = ("global_step",)  # training counters a checkpoint may hold beside the weights
SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


def prefix(path: Path) -> Path | None:
    """The checkpoint prefix ``path`` names: itself when ``<path>.index`` exists, or the
    index or a data shard given by its own name; None when it names no checkpoint."""
    if path.name.endswith(".index") and _is(path, Path.is_file):
        return path.with_name(path.name[: -len(".index")])
    shard = SHARD.search(path.name)
    if shard and _is(path, Path.is_file):
        return path.with_name(path.name[: shard.start()])
    if not _is(path, Path.exists) and _is(index(path), Path.exists):
        return path
    return None


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)``, False where the OS cannot even look: a name that fits the file
    system with ``.index`` added may no longer fit ("File name too long"), and then no
    such checkpoint exists."""
    try:
        return test(path)
    except OSError:
        return False


def index(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def looks_like_index(path: Path) -> bool:
    """An SSTable ends with its magic number: the bytes of a TensorFlow checkpoint index."""
    size = path.stat().st_size
    if size < 48:  # a footer is 48 bytes
        return False
    with open(path, "rb") as f:
        f.seek(size - 8)
        return f.read(8) == INDEX_MAGIC


def shards(prefix: Path) -> list[Path]:
    """The data shards beside the prefix, as the index's names say (``-of-`` their count)."""
    found = sorted(q for q in prefix.parent.glob(f"{glob_escape(prefix.name)}.data-*-of-*") if SHARD.search(q.name))
    return found


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def check_files(prefix: Path) -> list[Path]:
    """The index (a regular file of bounded size, with the table's magic) and a complete
    set of data shards, before TensorFlow opens anything. Returns the shards."""
    idx = index(prefix)
    if not idx.is_file():
        raise Damaged(
            f"{idx} is missing or not a regular file: a TensorFlow checkpoint is PREFIX.index + PREFIX.data-*"
        )
    if idx.stat().st_size > MAX_INDEX:
        raise Damaged(
            f"its index {idx.name} is {idx.stat().st_size:,} bytes; a GoogLeNet's is about 20 KB "
            f"(at most {MAX_INDEX:,} accepted)"
        )
    if not looks_like_index(idx):
        raise Damaged(f"{idx.name} is not a TensorFlow checkpoint index (no table magic at its end: truncated?)")
    found = shards(prefix)
    counts = {int(SHARD.search(q.name).group(2)) for q in found}  # type: ignore[union-attr]
    numbers = {int(SHARD.search(q.name).group(1)) for q in found}  # type: ignore[union-attr]
    if not found or len(counts) != 1 or numbers != set(range(counts.pop())):
        names = ", ".join(q.name for q in found) or "none"
        raise Damaged(f"its data shards are incomplete ({prefix.name}.data-NNNNN-of-MMMMM; found: {names})")
    for q in found:
        if not q.is_file():
            raise Damaged(f"{q.name} is not a regular file")
    return found


def declared(
    prefix: Path, plan: Plan, canonical: dict[str, str], expected: dict[str, tuple[int, ...]]
) -> dict[str, Tensor]:
    """Every variable of the checkpoint as the index declares it (nothing read yet), in
    the canonical layout where its canonical key is known (``canonical``: file name ->
    canonical key; ``expected``: canonical shapes)."""
    import tensorflow as tf

    check_files(prefix)
    reader = tf.train.load_checkpoint(str(prefix))  # reads the index only
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    tensors: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        dtype = dtypes[name]
        try:
            np_dtype: np.dtype | str = np.dtype(dtype.as_numpy_dtype)
        except TypeError:
            np_dtype = dtype.name
        if dtype.name == "bfloat16":
            np_dtype = "bfloat16"
        file_shape = tuple(int(d) for d in shape)
        key = canonical.get(name)
        shape_, convert = to_canonical_layout(file_shape, expected.get(key) if key else None)
        where = f"TensorFlow {name} {file_shape}"  # errors name the checkpoint's variable too
        problem = None if dtype.is_floating else f"of dtype {dtype.name} ({name}), not floating-point weights"
        tensors[name] = Tensor(shape_, np_dtype, _loader(reader, name, convert, dtype.name), problem, where)
    return tensors


def check_data(prefix: Path, tensors: dict[str, Tensor]) -> None:
    """The shards hold at least the bytes the index declares (else they were cut short)."""
    need = sum(t.nbytes for t in tensors.values())
    have = sum(q.stat().st_size for q in shards(prefix))
    if have < need:
        raise Damaged(
            f"its data shards hold {have:,} bytes but its index declares {need:,} bytes of values (truncated)"
        )


def to_canonical_layout(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> tuple[tuple[int, ...], Callable]:
    """(canonical shape, conversion): a 4-D kernel (kh, kw, in, out) -> (out, in, kh, kw);
    a 1x1 kernel where the canonical key is a dense layer's (TF-slim's classifier) ->
    (out, in). Other shapes are kept (and compared as they are)."""
    if len(shape) == 4 and expected is not None and len(expected) == 2 and shape[:2] == (1, 1):
        return (shape[3], shape[2]), lambda a: a.reshape(shape[2], shape[3]).T
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1]), lambda a: a.transpose(3, 2, 0, 1)
    return shape, lambda a: a


def _loader(reader, name: str, convert: Callable, dtype: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        value = np.asarray(reader.get_tensor(name))  # TensorFlow checks the value's CRC32C
        if dtype == "bfloat16":
            value = value.astype(np.float32)
        return np.ascontiguousarray(convert(value))

    return load


def counter(tensor: Tensor) -> bool:
    """A scalar integer counter (``global_step``), not a weight."""
    return tensor.shape == () and isinstance(tensor.dtype, np.dtype) and tensor.dtype.kind in "iu"


def _read_tf(path: Path, plan: Plan) -> FileContents:
    """A TensorFlow checkpoint as the ``tf-checkpoint`` format reads it: the index's
    declarations (:func:`declared`) and the shards' sizes (:func:`check_data`) checked
    before any value is read."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log
    try:
        with quiet_stderr():  # its absl and oneDNN lines, printed before its logging starts
            import tensorflow  # noqa: F401 - only to say how to install it
    except ImportError:
        raise PortError(
            f"{path}: reading a TensorFlow checkpoint needs tensorflow: pip install -e '.[keras]'"
        ) from None
    try:
        names = naming.slim_names(plan)
    except naming.NamingError as e:
        raise PortError(
            f"{path}: a TensorFlow checkpoint is read as TF-slim's inception_v1 (--variant googlenet_slim); {e}"
        ) from None
    tensors = declared(path, plan, {theirs: ours for ours, theirs in names.items()}, canonical_shapes(plan))
    counters = [k for k, t in tensors.items() if k in COUNTERS and counter(t)]
    for k in counters:
        del tensors[k]
    bounds.check_sizes(path, tensors, bounds.ceiling(plan))
    missing = [f"{theirs!r} ({ours})" for ours, theirs in names.items() if theirs not in tensors]
    if missing:  # named as the checkpoint names them; extra and mis-shaped ones as every format's are
        more = f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""
        raise PortError(f"{path}: missing variable {', '.join(missing[:4])}{more}")
    check_data(path, tensors)
    notes = [f"TensorFlow checkpoint {path.name}: {len(tensors)} variables (the .meta graph is not read)"]
    notes += [f"dropped {', '.join(counters)} (a training counter, not a weight)"] if counters else []
    return FileContents(tensors, "slim", notes)


def _write_tf(params: Params, plan: Plan) -> Written:
    raise PortError("--to tf-checkpoint: a TensorFlow checkpoint is read, not written; write another format")


# fmt: off
ENTRIES: tuple[Format, ...] = (
    # Read only, by its prefix (the .index and .data-* files), TF-slim's names.
    Format("tf-checkpoint", (".ckpt", ".index"), "TensorFlow checkpoint", None, ("tf-checkpoint",),
           _read_tf, _write_tf, load_by_name(_read_tf, None), writable=False,
           checksum="CRC32C of each tensor (TensorFlow checks it)"),
)
# fmt: on
