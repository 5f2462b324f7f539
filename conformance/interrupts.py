"""Signals during work: SIGINT, SIGTERM and SIGHUP become :class:`Interrupted` (an
exception, so ``finally`` blocks run; ``files.signals`` installs the handler and removes
temporary files), held back while a few statements that must run together finish, or
ignored for a clean-up that must."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Interrupted(BaseException):
    """A signal ended the work (not an Exception: no ``except Exception`` swallows it).
    ``detail`` says what was kept, for the one line the CLI prints."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum)
        self.signum, self.detail = signum, detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_held: list[int] = []  # signals that arrived inside signals_held(), oldest first
_holding = 0  # how deep signals_held() is nested


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The signal handler: :class:`Interrupted`, or held inside :func:`signals_held`."""
    if _holding:
        _held.append(signum)  # raised when the held statements are done
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def ignoring_signals() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP for a short clean-up that must finish (only the
    main thread can; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back until a few statements that must run together
    are done, then raise :class:`Interrupted` for the first that came. Python runs signal
    handlers in the main thread whichever thread the kernel picked, so this holds them
    whatever threads TensorFlow or MXNet started (a thread's signal mask would not). Only
    the main thread holds: a held signal is raised where the hold ends, and another
    thread's hold would raise it there, away from the main thread's clean-up."""
    global _holding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        pending = _held[:1] if not _holding else []
        if not _holding:
            _held.clear()
    if pending:
        raise Interrupted(pending[0])
