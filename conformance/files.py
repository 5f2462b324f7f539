"""File output: every file the suite writes goes through here, so that a reader never
sees half a file and nothing is overwritten without being asked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` through a temporary file in the same directory, then rename it into
    place, so a reader never sees half a file. An existing ``path`` is an error unless
    ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; refusing to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_mode() -> int:
    """The permissions a new file gets here (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output(path: Path, force: bool, option: str) -> None:
    """Refuse, before any work, an output path that cannot or may not be written: an
    existing file without ``force``, anything but a regular file, a missing or
    unwritable directory. The error names ``option`` and the path."""
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{option} {path}: a symbolic link to nothing ({os.readlink(path)})")
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{option} {path}: not a regular file; give a file name")
        if not force:
            raise ValueError(f"{option} {path}: already exists; pass --force to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"{option} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: directory {directory} is not writable")
