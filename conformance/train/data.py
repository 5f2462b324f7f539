"""Training data for ``python -m conformance train``: MNIST / Fashion-MNIST IDX files
from a local directory, or a small generated data set. Nothing is downloaded.

IDX (LeCun's format): a big-endian header, magic ``0x00000803`` for uint8 images
(count, rows, cols) or ``0x00000801`` for uint8 labels (count), then the bytes.
Files may be gzipped (``.gz``), as they are distributed.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..files import atomic_write

IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
SPLITS = {"train": "train", "test": "t10k"}  # file prefixes, as MNIST and Fashion-MNIST name them
MEAN, STD = 0.1307, 0.3081  # MNIST's, as Liu's lecture normalises (transforms.Normalize)


class DataError(ValueError):
    """Data files that cannot be read as MNIST-style IDX."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # N x H x W uint8
    labels: np.ndarray  # N int64


# What an IDX file may declare is checked against its length before anything is read:
# uncompressed, exactly; gzipped, deflate's ceiling (1032:1, zlib's "technical details")
# bounds what a file of its size can hold. Reading stops at the declared size.
DEFLATE_RATIO = 1032
MAX_IDX_BYTES = 1 << 31  # 2 GiB of pixels at most (EMNIST's largest split: 550 MB); --limit reads fewer


@contextlib.contextmanager
def _stream(path: Path) -> Iterator[tuple[BinaryIO, bool]]:
    """The file's bytes as a stream, decompressed on the fly if it is gzipped (by its
    magic, whatever it is called); (stream, gzipped)."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gzipped:
            yield raw, False
            return
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                yield f, True  # type: ignore[misc]
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None


# The most items of a given shape (an image's rows x cols, or () for a label) a reader
# may hold; it may refuse the shape itself (a DataError or another ValueError).
MaxItems = Callable[[tuple[int, ...]], int]


def read_idx(path: Path, magic: int, limit: int | None = None, max_items: int | MaxItems | None = None) -> np.ndarray:
    """One IDX file as a uint8 array (its first ``limit`` items), checking the magic
    number and that the file holds exactly what its header declares; more than
    ``max_items`` items to read (a count, or a count for the item shape the header
    declares) is refused before reading."""
    return _read_idx(path, magic, limit, max_items)[0]


def _read_idx(
    path: Path, magic: int, limit: int | None = None, max_items: int | MaxItems | None = None
) -> tuple[np.ndarray, int]:
    """(the first ``limit`` items, the count the header declares)."""
    dims = 3 if magic == IMAGES_MAGIC else 1
    what = "images" if magic == IMAGES_MAGIC else "labels"
    size = path.stat().st_size
    with _stream(path) as (f, gzipped):
        header = f.read(4 + 4 * dims)
        if len(header) < 4 + 4 * dims:
            raise DataError(f"{path}: {len(header)} bytes is too short for an IDX {what} header")
        found = struct.unpack(">I", header[:4])[0]
        if found != magic:
            raise DataError(
                f"{path}: magic number {found:#010x}, expected {magic:#010x} (IDX uint8 {what}, "
                f"{dims} dimension{'s' if dims > 1 else ''})"
            )
        shape = struct.unpack(f">{dims}I", header[4:])
        declared = math.prod(shape)
        says = f"header says {' x '.join(map(str, shape))} = {declared} bytes of {what}"
        if not gzipped and size - len(header) != declared:
            raise DataError(f"{path}: {says}, the file holds {size - len(header)}")
        if gzipped and declared > DEFLATE_RATIO * size:
            raise DataError(f"{path}: {says}; a {size:,}-byte gzip file cannot hold more than {DEFLATE_RATIO * size:,}")
        count = shape[0] if limit is None else min(shape[0], limit)
        try:
            most = max_items(shape[1:]) if callable(max_items) else max_items
        except ValueError as e:  # the item shape itself refused
            raise DataError(f"{path}: {e}") from None
        if most is not None and count > most:
            raise DataError(
                f"{path}: {count:,} {what}; training holds at most {most:,} of them in memory at the "
                f"variant's size; pass --limit {most} or fewer"
            )
        want = count * math.prod(shape[1:])
        if want > MAX_IDX_BYTES:
            raise DataError(f"{path}: {count:,} {what} are {want:,} bytes, more than {MAX_IDX_BYTES:,}; pass --limit")
        body = f.read(want)
        rest = 0
        while len(body) == want and rest <= declared - want:  # the length must still be right; nothing kept
            chunk = f.read(min(1 << 20, declared - want - rest + 1))
            if not chunk:
                break
            rest += len(chunk)
        if len(body) + rest != declared:
            held = f"more than {declared}" if rest > declared - want else str(len(body) + rest)
            raise DataError(f"{path}: {says}, the file holds {held}")
    return np.frombuffer(body, dtype=np.uint8).reshape((count, *shape[1:])), shape[0]


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    present = sorted(p.name for p in directory.iterdir())[:8]
    raise DataError(f"--data {directory}: missing {stem} (or {stem}.gz); the directory holds {present or 'nothing'}")


def load_idx(
    directory: str | Path, limit: int | None = None, max_images: int | MaxItems | None = None
) -> dict[str, Split]:
    """``train`` and ``test`` splits of an MNIST-style directory (the first ``limit``
    images and labels of each; more than ``max_images``, a count or a count for the
    image shape the header declares, is refused before reading)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data {directory}: not a directory")
    splits = {}
    for split, prefix in SPLITS.items():
        images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
        (images, n_images), (labels, n_labels) = (
            _read_idx(images_path, IMAGES_MAGIC, limit, max_images),
            _read_idx(labels_path, LABELS_MAGIC, limit, max_images),
        )
        if n_images != n_labels:
            raise DataError(
                f"--data {directory}: {images_path.name} holds {n_images} images but "
                f"{labels_path.name} {n_labels} labels"
            )
        splits[split] = Split(images, labels.astype(np.int64))
    return splits


def write_idx(path: str | Path, array: np.ndarray, overwrite: bool = False) -> Path:
    """Write uint8 images (N x H x W) or labels (N) as IDX, gzipped if ``path`` ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    path = Path(path)
    return atomic_write(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data, overwrite)


def synthetic(
    n_train: int = 2000, n_test: int = 500, classes: int = 10, size: int = 28, seed: int = 0
) -> dict[str, Split]:
    """A learnable MNIST-like set: each class is a fixed random blob pattern, each image
    its class's pattern, shifted by up to 2 pixels, dimmed or brightened, plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((classes, 7, 7)) ** 3  # sparse bright strokes
    templates = np.kron(coarse, np.ones((size // 7 + 1, size // 7 + 1)))[:, :size, :size]

    def split(n: int) -> Split:
        labels = rng.integers(0, classes, n)
        shifts = rng.integers(-2, 3, (n, 2))
        images = np.array(
            [np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(labels, shifts, strict=True)]
        ).reshape(n, size, size)
        images = images * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 0.15, images.shape)
        return Split(np.clip(images * 255, 0, 255).astype(np.uint8), labels.astype(np.int64))

    return {"train": split(n_train), "test": split(n_test)}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of N x H x W floats to size x size, with half-pixel centres (as
    torchvision's ``Resize`` and d2l's ``resize=96``)."""
    _n, h, w = images.shape
    if (h, w) == (size, size):
        return images

    def axis(src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, src - 1), (pos - lo).astype(np.float32)

    (r0, r1, fr), (c0, c1, fc) = axis(h), axis(w)
    rows = images[:, r0] * (1 - fr)[None, :, None] + images[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc) + rows[:, :, c1] * fc


def prepare(images: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 N x H x W -> normalised float32 N x C x size x size (grey repeated for RGB nets)."""
    x = resize((images.astype(np.float32) / 255.0 - MEAN) / STD, size)
    return np.ascontiguousarray(np.repeat(x[:, None], channels, axis=1), dtype=np.float32)
