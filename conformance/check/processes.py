"""Each framework's part of ``check`` in a child process of its own.

A :class:`Child` stands in for a framework's :class:`~conformance.interface.Backend` in
the parent: every call (``build``, ``from_canonical``, ``stages``, ``Trainer`` and the
trainer's methods, ...) is forwarded to a child started with the ``spawn`` context and
the framework's own environment (``KERAS_BACKEND`` for ``keras-jax``), which imports
the framework, so the parent imports none. What a call returns that is not plain data
(a model, a trainer) stays in the child, and the parent holds a :class:`Handle` to it.

Arrays cross the pipe out of band (pickle protocol 5): each buffer is received into
memory of its own size, checked against :data:`MAX_BYTES` before it is taken, and
viewed by the unpickled array, not copied. A child that dies is that framework's
failure, with the last lines it wrote to stderr; the others go on, and a new process
takes the framework's next call that needs nothing of the dead one (:data:`RESTARTS`). The children's
stderr files live in one temporary directory, removed on exit and on a signal
(:func:`conformance.files.temporary_directory`).
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import importlib.abc
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from .. import files, frameworks
from ..interface import Unsupported, forget_compiled
from . import judges
from .memory import map_large_blocks, release

MAX_BYTES = 4 << 30  # one message or buffer: googlenet_cifar's stages at --input-size 239: 352 MB a run
TAIL_LINES = 12  # of a dead child's stderr, in its failure
STOP_SECONDS = 10.0  # a child that does not end on its own after the pipe closes is killed
RESTARTS = 2  # a framework's process started again after it died, at most (each start imports it)
# Packages a framework's process keeps out, as not installed (_KeptOut): TensorFlow imports JAX when
# it can, for TFLite's converter alone, which the check never calls, and it would stand
# under Keras's float64 training peak (docs/benchmarks.md). The in-process layout, where
# JAX may be a framework of its own, imports it as usual.
KEPT_OUT = {"keras": ("jax",)}
# glibc's malloc backs its large blocks with transparent huge pages: the frameworks free
# and allocate their activations by the gigabyte, and each 4 KB page of a new block is
# a page fault that zeroes it.
# glibc reads its tunables when a process starts, so they are in the environment the
# child starts with; a user's own GLIBC_TUNABLES is left as it is.
TUNABLES = "glibc.malloc.hugetlb=1"
_STARTING = threading.Lock()  # os.environ holds TUNABLES only while one child starts


class ChildDied(RuntimeError):
    """The framework's process ended while it was asked for something."""


class ChildError(Exception):
    """An error raised in a child whose type the parent does not know by name."""


def _send(conn: Connection, value: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(pickle.dumps((head, [b.raw().nbytes for b in buffers]), protocol=5))
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def _receive(conn: Connection) -> Any:
    head, sizes = pickle.loads(conn.recv_bytes(MAX_BYTES))
    if any(size > MAX_BYTES for size in sizes):
        raise ChildError(f"a reply of {max(sizes)} bytes, above the bound of {MAX_BYTES}")
    buffers = []
    for size in sizes:
        # numpy's memory, not a bytearray: it is not zeroed first, and numpy has the kernel
        # back a large block with huge pages (one page fault per 2 MB instead of per 4 KB)
        buffer = np.empty(size, np.uint8)
        conn.recv_bytes_into(buffer)
        buffers.append(buffer)
    return pickle.loads(head, buffers=buffers)


def _plain(value: Any) -> bool:
    """Data that crosses the pipe as it is; anything else stays in the child."""
    if isinstance(value, (np.ndarray, np.generic, str, bytes, int, float, bool, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class Handle:
    """The parent's name for an object that lives in a child (a model, a trainer): its
    methods are forwarded there. Dropping the last reference frees it in the child with
    the next call."""

    def __init__(self, child: Child, number: int) -> None:
        self.child, self.number, self.generation = child, number, child.generation

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.child.call(("method", self.number, name), args, kwargs, self)

    def __reduce__(self) -> Any:
        return (_Ref, (self.number,))

    def __del__(self) -> None:
        if self.generation == self.child.generation:  # else it went with the process that died
            self.child.dropped.append(self.number)


class _Ref:
    """A handle as the child receives it: the number of one of its objects."""

    def __init__(self, number: int) -> None:
        self.number = number


def _raise(kind: str, message: str) -> None:
    if kind == "Unsupported":
        raise Unsupported(message)
    known = getattr(builtins, kind, None)
    if isinstance(known, type) and issubclass(known, Exception):
        raise known(message)
    raise type(kind, (ChildError,), {})(message)


class Child:
    """One framework's process, satisfying :class:`~conformance.interface.Backend` by
    forwarding; ``name`` is the framework's name in the check (``keras-jax``), and the
    attributes the harness reads (``MODES``, ``judge``, ``import_seconds``) are the
    child's own."""

    in_own_process = True  # what training asks: several can train at once

    def __init__(self, name: str, directory: Path, threads: int | None = None) -> None:
        self.name = name
        self.dropped: list[int] = []  # handles the parent let go of, freed with the next call
        self.stderr = directory / f"{name}.stderr"
        self.environment = {**frameworks.environment(name), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        self.generation = 0  # which of the framework's processes this is: 0, then 1 after a restart
        self.attributes: dict[str, Any] = {}
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=serve,
            args=(self.name, theirs, str(self.stderr), self.environment),
            name=f"check {self.name}",
            daemon=True,
        )
        with _STARTING:
            own = "GLIBC_TUNABLES" not in os.environ
            if own:
                os.environ["GLIBC_TUNABLES"] = TUNABLES
            try:
                self.process.start()
            finally:
                if own:
                    del os.environ["GLIBC_TUNABLES"]
        theirs.close()

    def hello(self) -> None:
        """Wait for the child's constants (``MODES``, ``judge``), or why it cannot load."""
        self.attributes = self._answer()

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("attributes", {}):
            return self.attributes[name]
        if name.startswith("_") or name not in _FORWARDED:
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(("backend", name), args, kwargs)

    def call(
        self, target: tuple[Any, ...], args: tuple[Any, ...], kwargs: Mapping[str, Any], of: Handle | None = None
    ) -> Any:
        """``target`` called in the child (a method ``of`` one of its objects), a
        :class:`Handle` among ``args`` standing for that object there. A process that
        died in an earlier call is started again for a call that needs none of its
        objects (the next variant's build), within :data:`RESTARTS`."""
        held = [a for a in (of, *args) if isinstance(a, Handle)]
        dead = self.process.exitcode is not None
        if any(h.generation != self.generation for h in held) or (dead and held):
            raise ChildDied(f"{self.name}: the object asked for lived in its process that died")
        if dead:
            self._restart()
        dropped, self.dropped = self.dropped, []
        try:
            _send(self.conn, (target, args, dict(kwargs), dropped))
        except (OSError, ValueError):
            raise self._died() from None
        return self._answer()

    def forget_compiled(self, model: Any, shape: tuple[int, ...] | None = None) -> None:
        """What the child compiled for ``model`` at ``shape``, dropped there, and what it
        freed returned to the OS."""
        with contextlib.suppress(ChildDied):  # a dead process holds nothing more
            self.call(("forget",), (model, shape), {})

    def _answer(self) -> Any:
        try:
            kind, value = _receive(self.conn)
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "handle":
            return Handle(self, value)
        if kind == "error":
            _raise(*value)
        return value

    def _restart(self) -> None:
        if self.generation >= RESTARTS:
            raise ChildDied(f"{self.name}'s process died {self.generation + 1} times; it is not started again")
        self.conn.close()
        self.generation += 1
        self.dropped = []  # the dead process's objects went with it
        self._start()
        self.hello()

    def _died(self) -> ChildDied:
        self.process.join(STOP_SECONDS)
        code = self.process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited with {code}"
        try:
            lines = self.stderr.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            lines = []
        said = " | ".join(line.strip() for line in lines if line.strip()) or "(nothing on stderr)"
        return ChildDied(f"{self.name}'s process {how}; its last words: {said}")

    def close(self, wait: bool = True) -> None:
        """End the child: the closed pipe tells it to; one that does not listen, or any
        when not ``wait`` (the check was interrupted), is killed."""
        self.conn.close()
        self.process.join(STOP_SECONDS if wait else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# The interface's functions a Child forwards (its constants come with the child's hello).
_FORWARDED = {"build", "to_canonical", "from_canonical", "forward", "stages", "count_params", "version", "Trainer"}
_FORWARDED |= {"to_onnx"}


@contextlib.contextmanager
def children(names: list[str], threads: int | None = None) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """(a :class:`Child` per framework that could start, {skipped name: why}), in the
    order asked for; every child ended and the temporary directory removed on the way
    out, also on a signal (which :func:`conformance.files.signals` turns into an
    exception)."""
    directory = files.temporary_directory(Path(tempfile.gettempdir()) / "conformance-check")
    started: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    wait = True
    try:
        for name in names:  # all at once: their imports take seconds each
            started[name] = Child(name, directory, threads)
        for name, child in list(started.items()):
            try:
                child.hello()
            except ChildDied as e:  # while importing: nothing of it can be checked
                skipped[name] = str(e)
            else:
                skipped.update({name: child.attributes["skipped"]} if "skipped" in child.attributes else {})
            if name in skipped:
                started.pop(name).close()
        yield started, skipped
    except BaseException:
        wait = False  # interrupted, or failed: no child's answer is wanted any more
        raise
    finally:
        for child in started.values():
            child.close(wait)
        files.discard_directory(directory)


class _KeptOut(importlib.abc.MetaPathFinder):
    """Packages imported as if not installed: their import raises ModuleNotFoundError,
    as the importing library expects of an optional dependency, and nothing of them
    enters ``sys.modules``."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {fullname!r} (kept out of this check process)", name=fullname)
        return None


def serve(name: str, conn: Connection, stderr: str, environment: Mapping[str, str]) -> None:
    """The child: load framework ``name`` with its environment, say its constants (or why
    it cannot load), then answer calls until the parent closes the pipe."""
    # The parent ends its children; a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 2)
    os.environ.update(environment)
    if name in KEPT_OUT:
        sys.meta_path.insert(0, _KeptOut(KEPT_OUT[name]))
    map_large_blocks()
    start = time.perf_counter()
    try:
        backends, skipped = judges.load_with_judges([name])
    except ValueError as e:
        _send(conn, ("value", {"skipped": str(e)}))
        return
    if name not in backends:
        _send(conn, ("value", {"skipped": skipped[name]}))
        return
    backend = backends[name]
    attributes = {"MODES": backend.MODES, "judge": bool(getattr(backend, "judge", False))}
    attributes["import_seconds"] = time.perf_counter() - start
    _send(conn, ("value", attributes))
    # What exists now (the framework's modules) is left out of the collections release()
    # makes, as in the parent.
    gc.freeze()
    objects: dict[int, Any] = {}
    numbers = itertools.count(1)
    while True:
        try:
            target, args, kwargs, dropped = _receive(conn)
        except EOFError:
            return
        for number in dropped:
            objects.pop(number, None)
        if dropped:
            # A model or trainer the parent let go of is freed now, not at a collection
            # the interpreter may never make (models sit in reference cycles), and its
            # memory returned before this call allocates: else each variant's float64
            # training stands on the last one's.
            release()
        args = tuple(objects[a.number] if isinstance(a, _Ref) else a for a in args)
        try:
            if target[0] == "forget":
                forget_compiled(*args)
                release()
                value: Any = None
            elif target[0] == "backend":
                value = getattr(backend, target[1])(*args, **kwargs)
            else:
                value = getattr(objects[target[1]], target[2])(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the parent reports it as the framework's failure
            _send(conn, ("error", (type(e).__name__, str(e))))
            continue
        if _plain(value):
            _send(conn, ("value", value))
        else:
            number = next(numbers)
            objects[number] = value
            _send(conn, ("handle", number))
        sys.stderr.flush()
