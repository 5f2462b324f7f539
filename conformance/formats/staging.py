"""Putting a port's written bytes in place: checked for space, staged beside DST (a
temporary file, or a directory for a SavedModel or a Gluon pair) where verification
loads them, then renamed into place, or removed, leaving nothing behind."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import files
from .base import Destination, PortError
from .deploy import params_of


def outputs(dst: Path, layout: str) -> list[Path]:
    """The paths a format writes for DST: DST, or the Gluon pair DST names."""
    if layout == "pair":
        return [dst, params_of(dst)]
    return [dst]


def check_directory_output(dst: Path) -> None:
    """A directory output must not exist, whatever ``--force`` says: only regular files
    are ever replaced, and a directory is not one."""
    if os.path.lexists(dst):
        mode = dst.lstat().st_mode
        raise PortError(
            f"DST {dst}: already exists ({files.kind(mode)}); a directory output (SavedModel, Orbax) is written "
            f"as a new one and "
            f"nothing but a regular file is ever replaced, even with --force: remove it or give another name"
        )
    try:
        files.check_output(dst, False, "DST")
    except files.OutputError as e:
        raise PortError(str(e)) from None


class Staged:
    """A directory beside DST holding the files before they are put in place: the
    verification loads them from ``path``; ``commit`` puts them in place."""

    def __init__(self, dst: Path, layout: str, data: dict[str, bytes]) -> None:
        self.dst, self.layout, self.data = dst, layout, data
        try:
            self.root = files.temporary_directory(dst, "DST")
        except files.OutputError as e:
            raise PortError(str(e)) from None
        try:
            if layout == "directory":
                self.path = self.root / "model"
                for rel, content in data.items():
                    target = self.path / rel
                    if rel.endswith("/"):
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
            else:
                self.path = self.root / "model-symbol.json"
                for ending, content in data.items():
                    (self.root / f"model{ending}").write_bytes(content)
        except OSError as e:
            self.discard()
            raise PortError(f"DST {dst}: writing failed: {files.describe_os_error(e)}; nothing was written") from None

    def commit(self, force: bool) -> None:
        if self.layout == "directory":
            _rename_new(self.path, self.dst)
            return
        # Both files written beside their places first (a full disk fails here), then
        # each put in place; the second failing takes back the first, if it was new.
        stem = self.dst.name.removesuffix("-symbol.json")
        temporaries = []
        try:
            for ending, content in self.data.items():
                final = self.dst.with_name(stem + ending)
                temporaries.append((files.Temporary(final, ending, "DST").write(content), final))
            placed: list[tuple[Path, bool]] = []
            try:
                for tmp, final in temporaries:
                    existed = final.exists()
                    tmp.commit(force)
                    placed.append((final, existed))
            except files.OutputError:
                for final, existed in placed:
                    if not existed:
                        final.unlink(missing_ok=True)
                raise
        except files.OutputError as e:
            raise PortError(str(e)) from None
        finally:
            for tmp, _ in temporaries:
                tmp.discard()

    def discard(self) -> None:
        files.discard_directory(self.root)


_RENAME_NOREPLACE = 1


def _rename_new(src: Path, dst: Path) -> None:
    """Rename a directory to a path that must not exist: Linux's renameat2 with
    RENAME_NOREPLACE, so a DST made meanwhile (even an empty directory, which a plain
    rename replaces) is never replaced; elsewhere a check, then the rename."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_cwd = -100
        if renameat2(at_cwd, os.fsencode(src), at_cwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise PortError(f"DST {dst} appeared meanwhile; nothing was replaced (remove it or give another name)")
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise PortError(f"DST {dst}: cannot put the directory in place: {os.strerror(err)}")
    if os.path.lexists(dst):  # pragma: no cover - a kernel without renameat2
        raise PortError(f"DST {dst} appeared meanwhile; nothing was replaced (remove it or give another name)")
    os.rename(src, dst)  # pragma: no cover


@contextlib.contextmanager
def staged(dst: Path, layout: str, data: dict[str, bytes]) -> Iterator[Staged]:
    stage = Staged(dst, layout, data)
    try:
        yield stage
    finally:
        stage.discard()


def written_size(data: Any) -> int:
    """Bytes of a format's output: bytes, or the files of a directory or pair."""
    return len(data) if isinstance(data, bytes | bytearray) else sum(len(v) for v in data.values())


# How frameworks that write through their own C++ streams say the disk or the
# process's file-size limit (ulimit -f) is full: TensorFlow passes strerror on, MXNet's
# dmlc stream only says the write was short.
_SPACE_WORDS = ("No space left", "File too large", "Disk quota exceeded", "FileStream.Write incomplete")


def out_of_space(error: BaseException) -> str:
    """What a writer's exception says if the disk or the file-size limit was full ("" if
    it is about something else): the OS error in its chain, or the framework's words."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in files.SPACE_ERRORS:
            return files.describe_os_error(seen)
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    word = next((w for w in _SPACE_WORDS if w in text), "")
    if not word:
        return ""
    return f"{word} (the disk or this process's file-size limit is full)"


@contextlib.contextmanager
def staging(destination: Destination, data: bytes | dict[str, bytes]) -> Iterator[tuple[Path, Callable[[bool], None]]]:
    """(the written output's path for verification, a commit putting it in place): a
    temporary file beside DST, or a directory beside it for a SavedModel or a Gluon pair
    (:class:`Staged`). Nothing stays behind if the block fails."""
    if isinstance(data, dict):
        with staged(destination.path, destination.format.layout, data) as stage:
            yield stage.path, stage.commit
        return
    with files.Temporary(destination.path, destination.suffix, "DST") as tmp:
        try:
            tmp.write(data)
        except files.OutputError as e:
            raise PortError(str(e)) from None

        def commit(force: bool) -> None:
            try:
                tmp.commit(force)
            except files.OutputError as e:
                raise PortError(str(e)) from None

        yield tmp.name, commit


def check_space(dst: Path, size: int) -> None:
    try:
        files.check_space(dst, size + (1 << 20), "DST")
    except files.OutputError as e:
        raise PortError(str(e)) from None
