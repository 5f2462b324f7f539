"""Output directories of ``pitfalls --plot`` and ``page``: checked before any work, made
only when something is written into them (files themselves go through
``conformance.files``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..files import check_output


def check_dir(directory: Path, names: Iterable[str], force: bool, option: str) -> None:
    """Refuse, before any work, a directory that cannot be made or written, or any of the
    files ``names`` in it that may not be replaced (see ``files.check_output``)."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{option} {directory}: not a directory")
    if not directory.exists():
        parent = directory.parent if str(directory.parent) else Path(".")
        if not parent.is_dir():
            raise ValueError(f"{option} {directory}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {directory}: cannot create it, {parent} is not writable")
        return
    for name in names:
        check_output(directory / name, force, option)


def made(directory: Path) -> Path:
    """``directory``, created if missing (its parent was checked by :func:`check_dir`)."""
    directory.mkdir(exist_ok=True)
    return directory
