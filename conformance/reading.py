"""Reading checkpoint containers without trusting what they declare.

Every reader here looks at a file's own description of its tensors (a safetensors
header, a zip directory and ``.npy`` headers; MXNet's ``.params`` in ``mxnet_reading``) and checks it
against the file's length *before* anything is allocated, so a few-kilobyte file that
declares gigabytes costs nothing. What the tensors may be (shapes, the class count) is
decided by the caller, from the spec (``conformance.formats.bounds``). No framework is
imported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from .files import kind

MAX_HEADER = 16 << 20  # a GoogLeNet safetensors header is ~30 KB; 16 MB is any real one's ceiling
MAX_MEMBERS = 10_000  # zip members (a GoogLeNet .pth has ~350)
MAX_JSON = 64 << 20  # a report this suite writes (check, bench, pitfalls --json) is well under 1 MB


class Damaged(ValueError):
    """A file whose structure contradicts itself or its length (truncated, corrupt, or
    made to mislead): the message says what, without the file name (the caller adds it)."""


@dataclass
class Tensor:
    """A tensor as a file declares it; ``load()`` reads it (only after its shape and
    dtype were accepted). ``dtype`` is a numpy dtype, or a name numpy lacks
    (``"bfloat16"``); ``problem`` says why it can never be a weight (sparse, quantised)."""

    shape: tuple[int, ...]
    dtype: np.dtype | str
    load: Callable[[], np.ndarray] = field(repr=False)
    problem: str | None = None
    where: str = ""  # where it sits when the file names it otherwise: "HDF5 fc/vars/0 (1408, 10)"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    @property
    def nbytes(self) -> int:
        itemsize = 2 if self.dtype == "bfloat16" else getattr(self.dtype, "itemsize", 1)
        return self.size * itemsize


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 (the high half of a float32) to float32: exact."""
    return (bits.astype("<u2").astype(np.uint32) << 16).view(np.float32)


def _dims(shape: object, what: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise Damaged(f"{what}: shape {shape!r} is not a list of at most 8 non-negative integers")
    return tuple(shape)


# --------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header, then the data
# --------------------------------------------------------------------------------------

SAFETENSORS_DTYPES: dict[str, np.dtype | str] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": "bfloat16",
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}


@dataclass
class Safetensors:
    tensors: dict[str, Tensor]
    metadata: dict[str, str]


def safetensors(path: Path) -> Safetensors:
    """The header of a safetensors file, checked against the file's length: every
    tensor's byte range matches its shape and dtype and lies inside the file, the ranges
    tile the data section exactly. Tensors load from their own range only."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise Damaged(f"{size} bytes is too short for a safetensors header")
        n = int.from_bytes(head, "little")
        if n > min(MAX_HEADER, size - 8):
            raise Damaged(f"the header declares {n:,} bytes; the file holds {size - 8:,} after the length")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Damaged(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise Damaged("the header is not a JSON object")
    start = 8 + n
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise Damaged("__metadata__ is not a map of strings")
    tensors: dict[str, Tensor] = {}
    ranges = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise Damaged(f"{name!r}: expected dtype, shape and data_offsets, got {entry!r:.100}")
        shape = _dims(entry["shape"], repr(name))
        code = entry["dtype"]
        dtype = SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise Damaged(f"{name!r}: data_offsets {offsets!r:.100} is not a pair of integers")
        begin, end = offsets
        if not 0 <= begin <= end <= size - start:
            raise Damaged(
                f"{name!r}: its data at {begin:,}..{end:,} lies outside the {size - start:,} bytes of data "
                f"(truncated, or a header that declares more than the file holds)"
            )
        problem = None if dtype is not None else f"of dtype {code!r}, which this suite cannot read"
        t = Tensor(
            shape,
            dtype if dtype is not None else str(code),
            _range_loader(path, start + begin, end - begin, dtype, shape),
            problem,
        )
        if dtype is not None and t.nbytes != end - begin:
            raise Damaged(f"{name!r}: {code} {list(shape)} is {t.nbytes:,} bytes; its data range holds {end - begin:,}")
        tensors[name] = t
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise Damaged(f"the tensors' data ranges {'overlap' if begin < position else 'leave a gap'} at {begin:,}")
        position = end
    if position != size - start:
        raise Damaged(f"the tensors take {position:,} bytes of data; the file holds {size - start:,}")
    return Safetensors(tensors, metadata)


def _range_loader(path: Path, offset: int, length: int, dtype: np.dtype | str | None, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise Damaged(f"the file ended inside a tensor ({len(data):,} of {length:,} bytes)")
        if dtype == "bfloat16":
            return bfloat16_to_float32(np.frombuffer(data, "<u2")).reshape(shape)
        assert isinstance(dtype, np.dtype)
        return np.frombuffer(data, dtype).reshape(shape).copy()

    return load


def tensor_digest(params: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of tensors, independent of any file layout: for each key in sorted order,
    its name, dtype, shape and little-endian C-order bytes."""
    h = hashlib.sha256()
    for key in sorted(params):
        value = np.ascontiguousarray(params[key])
        value = value.astype(value.dtype.newbyteorder("<"), copy=False)
        h.update(f"{key}\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(value.data)  # a contiguous array is a buffer: no copy
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Zip archives (.pth, .npz, .keras): declared sizes before reading, CRC-32 on reading
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_zip(path: Path, where: str = "") -> Iterator[zipfile.ZipFile]:
    """The archive, open; whatever zipfile raises inside the block (a bad directory, a
    "version needed" it does not implement, a CRC or zlib error, a truncated member)
    becomes :class:`Damaged` with zipfile's own words. ``where``: what was being read."""
    try:
        with zipfile.ZipFile(path) as z:
            yield z
    except Damaged:
        raise
    except zipfile.BadZipFile as e:  # its words name the member ("Bad CRC-32 for file ...")
        raise Damaged(f"a damaged zip archive: {e} (truncated, or the bytes changed after it was written)") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError, KeyError) as e:
        raise Damaged(f"a damaged zip archive: {where}{type(e).__name__}: {e}") from None


def zip_problem(path: Path) -> str | None:
    """Why the archive's directory cannot be read (None: it can), for recognising a
    damaged zip by its bytes."""
    try:
        with open_zip(path) as z:
            z.namelist()
    except Damaged as e:
        return str(e)
    return None


def zip_members(
    path: Path, max_member: int, max_total: int, named: Mapping[str, tuple[int, str]] | None = None
) -> list[zipfile.ZipInfo]:
    """The archive's members, refused when one declares more than ``max_member`` bytes
    uncompressed (``named``: a member's own limit and why) or all together more than
    ``max_total``. A small deflated file can declare gigabytes; reading stops at the
    declared size, so the declaration is the bound."""
    with open_zip(path) as z:
        infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise Damaged(f"the archive holds {len(infos):,} members; a checkpoint has at most {MAX_MEMBERS:,}")
    for info in infos:
        limit, why = (named or {}).get(info.filename, (max_member, ""))
        if info.file_size > limit and why:
            raise Damaged(f"its {info.filename} declares {info.file_size:,} bytes uncompressed; {why}")
        if info.file_size > max_member:
            raise Damaged(
                f"member {info.filename!r} declares {info.file_size:,} bytes uncompressed; "
                f"no tensor of this network needs more than {max_member:,}"
            )
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise Damaged(f"the members declare {total:,} bytes uncompressed; this network needs at most {max_total:,}")
    return infos


def check_crcs(path: Path, names: Iterable[str] | None = None) -> None:
    """Read every member (or ``names``) to its end: zipfile then checks its CRC-32, the
    checksum the archive stores for each member. Streamed, so memory stays small."""
    with open_zip(path) as z:
        for info in z.infolist():
            if names is not None and info.filename not in names:
                continue
            with z.open(info) as f:
                while f.read(1 << 20):
                    pass


def read_member(path: Path, name: str) -> bytes:
    """One member, whole, its CRC-32 checked (call after :func:`zip_members`)."""
    with open_zip(path, f"member {name!r}: ") as z:
        return z.read(name)


def npz(path: Path, max_member: int, max_total: int) -> dict[str, Tensor]:
    """A numpy archive's arrays as declared by their ``.npy`` headers, each checked
    against its member's size; loading reads one member (CRC checked), never pickles."""
    infos = zip_members(path, max_member, max_total)
    tensors: dict[str, Tensor] = {}
    with open_zip(path) as z:
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise Damaged(f"member {info.filename!r} is not a .npy array")
            with z.open(info) as f:
                shape, dtype, fortran, header = _npy_header(f)
            name = info.filename[: -len(".npy")]
            if dtype.hasobject:
                tensors[name] = Tensor(
                    shape,
                    dtype,
                    never_loaded,
                    "an object array, which only pickle reads, and pickle can run code (allow_pickle=False)",
                )
                continue
            expected = header + int(np.prod(shape, dtype=object)) * dtype.itemsize
            if info.file_size != expected:
                raise Damaged(
                    f"member {info.filename!r} declares {dtype} {list(shape)} ({expected - header:,} bytes) "
                    f"but holds {info.file_size - header:,}"
                )
            tensors[name] = Tensor(shape, dtype, _npy_loader(path, info.filename, fortran))
    return tensors


def never_loaded() -> np.ndarray:
    """The loader of a tensor a reader refuses: its declaration is refused first."""
    raise AssertionError("a refused tensor is never loaded")


def _npy_header(file: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, Fortran order, header bytes) of a .npy stream, reading the header only."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(file)
        read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if read is None:
            raise Damaged(f".npy format version {version} is not supported")
        shape, fortran, dtype = read(file, max_header_size=1 << 16)  # type: ignore[call-arg]  # numpy >= 1.24
    except ValueError as e:
        raise Damaged(f"a damaged .npy header ({e})") from None
    return tuple(shape), np.dtype(dtype), bool(fortran), file.tell()


def _npy_loader(path: Path, member: str, fortran: bool):
    def load() -> np.ndarray:
        from numpy.lib import format as npy

        array = npy.read_array(io.BytesIO(read_member(path, member)), allow_pickle=False)
        return np.ascontiguousarray(array)

    return load


def json_document(path: Path, max_bytes: int = MAX_JSON) -> object:
    """The JSON document in a regular file of at most ``max_bytes``. A FIFO, a device or
    a longer file is refused (Damaged) before it is read, and no more than
    ``max_bytes`` + 1 bytes are ever read; the OS's refusals stay OSErrors."""
    # O_NONBLOCK: opening a FIFO does not wait for a writer (a regular file ignores it)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        mode, size = os.fstat(fd).st_mode, os.fstat(fd).st_size
        if not stat.S_ISREG(mode):
            raise Damaged(f"{kind(mode)}, not a regular file")
        if size > max_bytes:
            raise Damaged(f"{size:,} bytes; a report is at most {max_bytes:,}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while it was read
        raise Damaged(f"more than {max_bytes:,} bytes; a report is at most {max_bytes:,}")
    try:
        return json.loads(data)
    except RecursionError:
        raise Damaged("not JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise Damaged(f"not JSON ({e})") from None
