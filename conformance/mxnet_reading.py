"""Reading MXNet ``.params`` files (``mx.nd.save``: the list magic 0x112, then NDArrays,
then their names) without trusting what they declare: every array's header is checked
against the file's length before anything is allocated, and no data is read. No
framework is imported here."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from .reading import Damaged, Tensor, never_loaded

MAX_NAME = 1024  # bytes of a tensor name in an MXNet file

MXNET_LIST_MAGIC = 0x112
_NDARRAY_MAGICS = {0xF993FAC9: 2, 0xF993FACA: 3}  # NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC (numpy shapes)
# mshadow's type flags: numpy dtype (little-endian) or the name of one numpy lacks
MXNET_DTYPES: dict[int, np.dtype | str] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    8: np.dtype("<i2"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
    12: "bfloat16",
}
_STORAGE = {1: "row_sparse", 2: "csr"}


class _Cursor:
    def __init__(self, file: io.BufferedIOBase, size: int) -> None:
        self.f, self.size = file, size

    def take(self, size: int, what: str) -> bytes:
        data = self.f.read(size)
        if len(data) != size:
            raise Damaged(f"the file ends inside {what} (at byte {self.f.tell():,} of {self.size:,})")
        return data

    def skip(self, size: int, what: str) -> int:
        at = self.f.tell()
        if at + size > self.size:
            raise Damaged(f"{what} needs {size:,} bytes at {at:,}; the file ends at {self.size:,}")
        self.f.seek(size, io.SEEK_CUR)
        return at

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def i32(self, what: str) -> int:
        return int(struct.unpack("<i", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def shape(self, what: str) -> tuple[int, ...]:
        ndim = self.i32(f"{what}'s shape")
        if not 0 <= ndim <= 8:
            raise Damaged(f"{what} declares {ndim} dimensions")
        dims = struct.unpack(f"<{ndim}q", self.take(8 * ndim, f"{what}'s shape"))
        if any(d < 0 for d in dims):
            raise Damaged(f"{what} declares shape {dims}")
        return tuple(int(d) for d in dims)


def mxnet_params(path: Path, max_arrays: int) -> dict[str, Tensor]:
    """The arrays of an MXNet ``.params`` file as its header declares them, each one's
    data checked to lie inside the file, without reading any (the layout of
    ``NDArray::Save`` in MXNet 1.x, src/ndarray/ndarray.cc)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        c = _Cursor(f, size)
        if c.u64("the header") != MXNET_LIST_MAGIC:
            raise Damaged("not an MXNet parameter file (no 0x112 list magic)")
        c.u64("the header")
        count = c.u64("the array count")
        if count > max_arrays:
            raise Damaged(f"declares {count:,} arrays; this network has at most {max_arrays:,}")
        arrays = [_mxnet_array(c, i) for i in range(count)]
        names_count = c.u64("the name count")
        if names_count != count:
            raise Damaged(f"holds {count} arrays but {names_count} names")
        names = []
        for i in range(count):
            n = c.u64(f"name {i}'s length")
            if n > MAX_NAME:
                raise Damaged(f"name {i} declares {n:,} bytes")
            names.append(c.take(n, f"name {i}").decode("utf-8", errors="replace"))
        if f.tell() != size:
            raise Damaged(f"{size - f.tell():,} bytes follow the last name")
    if len(set(names)) != len(names):
        raise Damaged("two arrays share a name")
    return {name: t for name, t in zip(names, arrays, strict=True)}


def _mxnet_array(cursor: _Cursor, index: int) -> Tensor:
    what = f"array {index}"
    magic = cursor.u32(what)
    if magic not in _NDARRAY_MAGICS:
        raise Damaged(f"{what}: magic {magic:#x} is not an MXNet >= 1.0 NDArray (V2/V3)")
    stype = cursor.i32(what)
    storage = _STORAGE.get(stype)
    if stype and storage is None:
        raise Damaged(f"{what}: unknown storage type {stype}")
    stored = cursor.shape(f"{what}'s storage") if storage else None
    shape = cursor.shape(what)
    if not shape and magic == 0xF993FAC9:  # V2: ndim 0 is an empty ("none") array, no more fields
        return Tensor(shape, np.dtype("<f4"), never_loaded, "an empty (none) array")
    cursor.take(8, f"{what}'s context")
    dtype = _mxnet_dtype(cursor.i32(f"{what}'s type"), what)
    aux = []
    for j in range({"row_sparse": 1, "csr": 2}.get(storage or "", 0)):  # row_sparse: indices; csr: indptr, indices
        aux.append((_mxnet_dtype(cursor.i32(f"{what}'s aux type"), what), cursor.shape(f"{what}'s aux {j}")))
    t = Tensor(shape, dtype, never_loaded, f"a sparse ({storage}) array" if storage else None)
    values = Tensor(stored, dtype, never_loaded) if stored is not None else t
    cursor.skip(values.nbytes, f"{what}'s {values.nbytes:,} bytes of data")
    for aux_dtype, aux_shape in aux:
        cursor.skip(Tensor(aux_shape, aux_dtype, never_loaded).nbytes, f"{what}'s sparse indices")
    return t


def _mxnet_dtype(flag: int, what: str) -> np.dtype | str:
    dtype = MXNET_DTYPES.get(flag)
    if dtype is None:
        raise Damaged(f"{what}: unknown type flag {flag}")
    return dtype
