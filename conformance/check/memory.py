"""Keeping the check's peak at one variant's and one run per framework running at once
(no more than the machine holds: ``parallel.at_once``): a run's stages spilled to disk
when large, large blocks served from their own mappings, and what was freed returned
to the OS before the next framework allocates its own."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

SPILL_BYTES = 64 << 20  # a run's stages above this wait on disk, not in memory


class StoredRun(Mapping[str, np.ndarray]):
    """A run's stages, kept to compare later runs with. Above ``SPILL_BYTES`` (the
    stages of googlenet_cifar at --input-size 239 are 352 MB per run) they wait in a temporary
    directory and each is mapped back only while it is compared: the kernel's page
    cache holds them, and the process holds one stage instead of a whole run."""

    def __init__(self, out: Mapping[str, np.ndarray], directory: Path) -> None:
        self.spilled = sum(v.nbytes for v in out.values()) > SPILL_BYTES
        self.arrays: dict[str, np.ndarray] = {}
        self.paths: dict[str, Path] = {}
        for i, (k, v) in enumerate(out.items()):
            if self.spilled:
                self.paths[k] = directory / f"{id(self)}-{i}.npy"
                np.save(self.paths[k], v, allow_pickle=False)
            else:
                self.arrays[k] = v

    def __getitem__(self, key: str) -> np.ndarray:
        if not self.spilled:
            return self.arrays[key]
        return np.load(self.paths[key], mmap_mode="r", allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths if self.spilled else self.arrays)

    def __len__(self) -> int:
        return len(self.paths if self.spilled else self.arrays)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 << 20


def map_large_blocks() -> None:
    """Have glibc serve every block of 4 MB or more from its own mapping, returned to the
    OS when freed. By default the threshold grows with each large block freed (up to 32
    MB), after which tensors land in the heaps and fragment them; a smaller threshold
    costs a page fault per activation (docs/benchmarks.md has the figures).
    Process-wide, and harmless beyond the check: a few more mappings."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to set
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> None:
    """Return what was freed to the OS. Frameworks free tensors into glibc's heaps (one
    per thread), which keep them for reuse by the same thread: without a trim what one
    framework freed stays resident while the next (other threads) allocates its own,
    and the check's peak becomes the sum of theirs."""
    gc.collect()  # models in reference cycles (Keras layers, cached graphs)
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)
