"""File output: every file the suite writes goes through here.

What it promises (`docs/files.md`, "What the suite promises about files"):

* An output path is checked before any work (:func:`check_output`): only an absent
  path or a regular file (with ``force``) is ever replaced, never a directory, FIFO,
  device or socket; a dangling symbolic link, an immutable file, an over-long name and a
  directory the process cannot write in are refused with the path and the reason.
* A file is written to a temporary file beside it, flushed to disk (``fsync``), then
  renamed into place (:func:`atomic_write`, :class:`Temporary`): a reader never sees half
  a file, and a failed write (a full disk) leaves the previous file as it was. A
  symbolic link given as the output is replaced by the file; its target is untouched.
* Temporary files, and the staging directories of multi-file outputs
  (:func:`temporary_directory`), are named ``.<name>.<pid>-<token>.conformance-tmp<suffix>``:
  removed on SIGINT / SIGTERM / SIGHUP (:func:`signals`), and recognised on a later run if
  a ``kill -9`` left one (:func:`stale_temporaries`), with the command that removes it.

OS errors become :class:`OutputError` (a ``ValueError``: the CLI's exit 2) naming the
path and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import interrupts

TEMP_MARK = ".conformance-tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.*)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{6})\.conformance-tmp(?P<suffix>.*)$", re.S)
# The staging directories earlier versions made for multi-file outputs (tempfile.mkdtemp).
_OLD_STAGING = re.compile(r"^\.(?P<name>.*)\.tmp-(?P<pid>\d+)-[a-z0-9_]{8}$", re.S)
_LIVE: set[Path] = set()  # this process's temporary files, removed when a signal ends it
_NOTED: set[Path] = set()  # stale temporary files already reported (once per process)
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, quota or file-size limit
# Linux's FS_IOC_GETFLAGS and the flags that make rename() over a file fail (chattr +i / +a).
_FS_IOC_GETFLAGS, _IMMUTABLE, _APPEND_ONLY = 0x80086601, 0x10, 0x20


class OutputError(ValueError):
    """An output that cannot or may not be written; the message names the option, the
    path and the reason. Nothing was written."""


def _say(option: str, path: Path | str) -> str:
    return f"{option} {path}" if option else str(path)


def file_mode() -> int:
    """The permissions a new file gets here (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _directory(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def name_max(directory: Path) -> int:
    """The longest file name (bytes) the directory's file system takes."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):  # no such limit reported: POSIX's usual
        return 255


def kind(mode: int) -> str:
    """What a file of this mode is, for messages: "a FIFO (named pipe)", "a directory"..."""
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((what for test, what in kinds.items() if test(mode)), "not a regular file")


def directory_problem(path: Path, max_entries: int, max_depth: int, max_bytes: int, holder: str) -> str | None:
    """What keeps directory ``path`` from being one a reader may open (None: nothing):
    anything but regular files and directories, more than ``max_entries`` of them, nested
    deeper than ``max_depth``, or more than ``max_bytes`` in all. Walked without following
    a link, and stopped at the first limit, before any file is read. ``holder`` names what
    the directory should be (``a SavedModel``) in the reason."""
    total, entries = 0, 0
    stack = [(path, 0)]
    while stack:
        directory, depth = stack.pop()
        with os.scandir(directory) as scan:
            for entry in scan:
                entries += 1
                if entries > max_entries:
                    return f"holds more than {max_entries:,} files and directories; {holder} holds fewer"
                inner = Path(entry.path).relative_to(path)
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    return f"{inner} is a symlink; {holder} holds none"
                if stat.S_ISDIR(mode):
                    if depth + 1 > max_depth:
                        return f"{inner} nests deeper than {holder} does"
                    stack.append((Path(entry.path), depth + 1))
                    continue
                if not stat.S_ISREG(mode):
                    return f"{inner} is {kind(mode)}, not a regular file"
                total += entry.stat(follow_symlinks=False).st_size
                if total > max_bytes:
                    return f"holds more than {max_bytes:,} bytes, more than {holder} of this network needs"
    return None


def _flags(path: Path) -> int:
    """The file's inode flags (chattr), 0 where the file system has none."""
    import fcntl
    import struct

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
    except OSError:  # ENOTTY: a file system without inode flags
        return 0
    finally:
        os.close(fd)


def check_output(
    path: Path, force: bool, option: str, notice: Callable[[str], None] | None = None, suffix: str = ""
) -> None:
    """Refuse, before any work, an output path that cannot or may not be written: an
    existing file without ``force``, anything but a regular file, a dangling symbolic
    link, an immutable file, a name too long for the file system, a missing directory
    or one this process cannot create a file in (tried, not guessed from permission
    bits, which root bypasses). Stale temporary files of an interrupted run in the
    directory are reported through ``notice`` (stderr by default)."""
    path = Path(path)
    directory = _directory(path)
    where = _say(option, path)
    if not directory.is_dir():
        raise OutputError(f"{where}: directory {directory} does not exist")
    limit = name_max(directory)
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"{where}: the name is {len(os.fsencode(path.name))} bytes; the file system takes {limit}")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{where}: a symbolic link to nothing ({os.readlink(path)}); remove it or give another name")
    if path.exists():
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise OutputError(f"{where}: {kind(mode)}, not a regular file; only regular files are ever replaced")
        if not force:
            raise OutputError(f"{where}: already exists; pass --force to overwrite it")
        flags = _flags(path) if not path.is_symlink() else 0
        if flags & (_IMMUTABLE | _APPEND_ONLY):
            what = "immutable" if flags & _IMMUTABLE else "append-only"
            raise OutputError(f"{where}: the file is {what} (chattr); it cannot be replaced")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{where}: directory {directory} is not writable")
    probe = Temporary(path, suffix, option)  # root passes os.access; the directory may still refuse a file
    probe.discard()
    for tmp in stale_temporaries(directory):
        if tmp in _NOTED:  # once per process, however many outputs share the directory
            continue
        _NOTED.add(tmp)
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to say
            folder = tmp.is_dir() and not tmp.is_symlink()
            (notice or _stderr)(
                f"note: {tmp} is a temporary {'directory' if folder else 'file'} left by an interrupted run of "
                f"this suite ({_bytes_under(tmp):,} bytes); remove it with: "
                f"rm {'-r ' if folder else ''}-- {shlex.quote(str(tmp))}"
            )


def _bytes_under(path: Path) -> int:
    """Bytes of a file, or of the files under a directory (not following links)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_space(path: Path, size: int, option: str) -> None:
    """Refuse before the work when the file system cannot hold ``size`` more bytes."""
    directory = _directory(Path(path))
    try:
        st = os.statvfs(directory)
    except OSError:  # no statistics: the write itself will say
        return
    free = st.f_bavail * st.f_frsize
    if free < size:
        raise OutputError(
            f"{_say(option, path)}: needs about {_mb(size)} and the file system has {_mb(free)} free; "
            f"nothing was written"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size:,} bytes"


def temporary_name(path: Path, suffix: str = "") -> str:
    """``.<name>.<pid>-<token>.conformance-tmp<suffix>``, the name cut so the whole fits
    the file system's limit (a 250-byte name must not fail for its temporary's sake)."""
    tail = f".{os.getpid()}-{secrets.token_hex(3)}{TEMP_MARK}{suffix}"
    room = max(0, name_max(_directory(path)) - 1 - len(os.fsencode(tail)))
    stem = os.fsencode(path.name)[:room].decode(errors="ignore")
    return f".{stem}{tail}"


def stale_temporaries(directory: Path) -> list[Path]:
    """Temporary files and staging directories of this suite in ``directory`` whose
    process is gone."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        folder = entry.is_dir(follow_symlinks=False)
        if m is None and folder:
            m = _OLD_STAGING.match(entry.name)
        if m and (folder or entry.is_file(follow_symlinks=False)) and not _alive(int(m["pid"])):
            found.append(Path(directory) / entry.name)
    return sorted(found)


def temporary_directory(path: Path, option: str = "") -> Path:
    """A new directory beside ``path``, named as a temporary file is (so a later run
    that finds it left by ``kill -9`` names it), registered like one: a signal that
    ends the process removes it with its contents."""
    directory = _directory(Path(path))
    while True:
        name = directory / temporary_name(Path(path))
        with interrupts.signals_held():
            try:
                os.mkdir(name, 0o700)
            except FileExistsError:
                continue
            except OSError as e:
                raise OutputError(f"{_say(option, Path(path))}: cannot write in {directory}: {e.strerror}") from None
            _LIVE.add(name)
        return name


def discard_directory(name: Path) -> None:
    """Remove a directory of :func:`temporary_directory` and what it holds."""
    shutil.rmtree(name, ignore_errors=True)
    _LIVE.discard(name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    try:  # a zombie (killed, not yet reaped by its parent) writes nothing more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def describe_os_error(error: OSError) -> str:
    if error.errno in SPACE_ERRORS:
        return f"{error.strerror or 'no space left'} (the disk or this process's file-size limit is full)"
    return error.strerror or str(error)


class Temporary:
    """A temporary file beside ``path``: create, write, then :meth:`commit` (rename into
    place) or :meth:`discard`. Registered, so a signal that ends the process removes it."""

    def __init__(self, path: Path, suffix: str = "", option: str = "") -> None:
        self.path, self.option = Path(path), option
        directory = _directory(self.path)
        while True:
            self.name = directory / temporary_name(self.path, suffix)
            with interrupts.signals_held():  # created and registered together: a signal cannot leave it unknown
                try:
                    fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    continue
                except OSError as e:
                    raise OutputError(f"{_say(option, self.path)}: cannot write in {directory}: {e.strerror}") from None
                _LIVE.add(self.name)
            break
        os.close(fd)

    def write(self, data: bytes | bytearray | memoryview) -> Temporary:
        """Write ``data`` and flush it to disk; a full disk removes the temporary file and
        raises OutputError (the previous file at ``path`` is untouched)."""
        try:
            with open(self.name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(self.name, file_mode())  # created 0600; give the usual permissions
        except OSError as e:
            self.discard()
            raise OutputError(
                f"{_say(self.option, self.path)}: writing {_mb(len(data))} failed: {describe_os_error(e)}; "
                f"nothing was written"
            ) from None
        return self

    def commit(self, force: bool) -> Path:
        """Rename into place. Without ``force`` a hard link, which fails if the path
        appeared since it was checked: never a silent overwrite. A path that became
        anything but a regular file meanwhile is refused."""
        where = _say(self.option, self.path)
        try:
            if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
                raise OutputError(f"{where}: became {kind(self.path.stat().st_mode)} meanwhile; nothing was written")
            if force:
                os.replace(self.name, self.path)
            else:
                self._link()
        except OSError as e:
            raise OutputError(f"{where}: cannot put the file in place: {describe_os_error(e)}") from None
        finally:
            self.discard()
        _sync_directory(_directory(self.path))
        return self.path

    def _link(self) -> None:
        try:
            os.link(self.name, self.path)
        except FileExistsError:
            raise OutputError(
                f"{_say(self.option, self.path)} appeared meanwhile; pass --force to overwrite it"
            ) from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if self.path.exists():  # a file system without hard links: check again, then rename
                raise OutputError(
                    f"{_say(self.option, self.path)} appeared meanwhile; pass --force to overwrite it"
                ) from None
            os.replace(self.name, self.path)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name)
        _LIVE.discard(self.name)

    def __enter__(self) -> Temporary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; some file systems cannot, which is no error."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity written as a string: strict JSON has neither,
    and a report must still say that an error was not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def atomic_write(path: str | Path, data: bytes, overwrite: bool = False, option: str = "") -> Path:
    """Write ``data`` through a temporary file in the same directory, flushed to disk,
    then renamed into place. An existing ``path`` is an error unless ``overwrite``; only
    a regular file is ever replaced."""
    path = Path(path)
    where = _say(option, path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{where}: a symbolic link to nothing ({os.readlink(path)})")
    if path.exists():
        if not stat.S_ISREG(path.stat().st_mode):
            raise OutputError(f"{where}: {kind(path.stat().st_mode)}, not a regular file; it is never replaced")
        if not overwrite:
            raise OutputError(f"{where}: already exists; refusing to overwrite it")
    if not _directory(path).is_dir():
        raise OutputError(f"{where}: directory {_directory(path)} does not exist")
    with Temporary(path, option=option) as tmp:
        return tmp.write(data).commit(overwrite)


def remove_temporaries() -> int:
    """Remove every temporary file this process still has; the number removed."""
    removed = 0
    for name in list(_LIVE):
        if name.is_dir() and not name.is_symlink():
            shutil.rmtree(name, ignore_errors=True)
            removed += 1
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
                removed += 1
        _LIVE.discard(name)
    return removed


@contextlib.contextmanager
def signals() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`interrupts.Interrupted`, so ``finally`` blocks
    run and temporary files go; on the way out, whatever is left is removed."""
    previous = {s: signal.signal(s, interrupts.raise_interrupted) for s in interrupts.SIGNALS}
    try:
        yield
    except interrupts.Interrupted:
        for s in interrupts.SIGNALS:  # a second signal during the clean-up must not cut it short
            signal.signal(s, signal.SIG_IGN)
        remove_temporaries()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
