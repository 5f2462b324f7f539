"""A pickle's allocations, bounded before ``torch.load`` runs it.

``torch.load(weights_only=True)`` runs no code, but the globals it allows still
allocate what the pickle asks: ``bytearray(2_500_000_000)`` is one such call in a
1 KB file, and a legacy file's storages are allocated at the size their persistent ids
declare. So the pickle is first replayed here with every global replaced by an inert
stand-in that allocates nothing: the calls that would allocate by an argument
(``bytearray(N)``, ``bytes(N)``) and every storage a persistent id declares are checked
against the bytes the file holds (a weight is stored in the file, so no honest
allocation is larger). The replay reads the pickle from memory or a mapping, so a
length an opcode declares is never allocated either: reading stops at the end.
"""

from __future__ import annotations

import mmap
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..reading import Damaged

# The legacy (pre-zip) torch.save stream starts with this number, then the protocol
# version, system information, the object, the storage keys, and the raw storages.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PICKLES = 5  # the pickles before the raw storages of a legacy file
# Builtins whose integer argument is a size to allocate.
ALLOCATORS = {("builtins", "bytearray"), ("builtins", "bytes"), ("__builtin__", "bytearray"), ("__builtin__", "bytes")}


class _StandIn:
    """Whatever a global would have built: takes any arguments, state and items, holds
    nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _Replay(pickle.Unpickler):
    def __init__(self, file: Any, name: str, most: int, storage_most: Callable[[Any], int]) -> None:
        super().__init__(file)
        self.name, self.most, self.storage_most = name, most, storage_most

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOCATORS:
            return self._allocator(f"{module}.{name}")
        return type(name, (_StandIn,), {"__module__": "conformance.formats.pickles.stand_in"})

    def _allocator(self, what: str) -> Callable[..., _StandIn]:
        def call(*args: Any, **kwargs: Any) -> _StandIn:
            size = args[0] if args else 0
            if isinstance(size, int) and not isinstance(size, bool) and size > self.most:
                raise Damaged(
                    f"its pickle {self.name} calls {what}({size:,}): an allocation larger than the file's "
                    f"{self.most:,} bytes, which no weight needs"
                )
            return _StandIn()

        return call

    def persistent_load(self, pid: Any) -> Any:
        """A storage: ('storage', type, key, location, numel[, view]); its element count
        bounded by the bytes the file holds for it."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise Damaged(f"its pickle {self.name} names a persistent object {str(pid)[:80]}, not a tensor storage")
        numel, most = pid[4], self.storage_most(pid[2])
        if not isinstance(numel, int) or isinstance(numel, bool) or not 0 <= numel <= most:
            raise Damaged(
                f"its pickle {self.name} declares a storage of {numel!r} elements; the file holds {most:,} bytes for it"
            )
        return _StandIn()


class _Window:
    """A read-only file over a buffer (bytes or a mapping): ``read(n)`` returns what is
    there, never allocating ``n`` first (a file object's ``read`` does)."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data, self.view, self.at = data, memoryview(data), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else min(len(self.view), self.at + size)
        chunk = self.view[self.at : end].tobytes()
        self.at = end
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        memoryview(buffer)[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.at)
        return self.read((len(self.view) if end < 0 else end + 1) - self.at)

    def release(self) -> None:
        self.view.release()


def _replay(window: _Window, name: str, most: int, storage_most: Callable[[Any], int]) -> Any:
    try:
        return _Replay(window, name, most, storage_most).load()
    except Damaged:
        raise
    except RecursionError:
        raise Damaged(f"its pickle {name} nests deeper than Python can follow") from None
    except Exception as e:  # noqa: BLE001 - a truncated or malformed pickle: pickle's own words
        raise Damaged(f"its pickle {name} cannot be read: {type(e).__name__}: {str(e)[:200]}") from None


def check_zipped(data: bytes, name: str, members: dict[str, int], size: int) -> None:
    """Replay a zipped checkpoint's ``data.pkl`` (``data``): every storage's element
    count at most the bytes of its ``data/<key>`` member (``members``: bytes by key),
    every allocation at most the archive's ``size``."""
    _replay(_Window(data), name, size, lambda key: members.get(str(key), 0))


def check_legacy(path: Path) -> None:
    """Replay the pickles of a legacy (non-zip) ``torch.save`` file, or the one pickle
    of a plain one: allocations and storages at most the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        window = _Window(mapped)
        try:
            first = _replay(window, path.name, size, lambda key: size)
            if first == LEGACY_MAGIC:
                for _ in range(LEGACY_PICKLES - 1):
                    _replay(window, path.name, size, lambda key: size)
        finally:
            window.release()
