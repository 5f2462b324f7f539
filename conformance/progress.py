"""Progress of a long command, on stderr: one rich progress bar on a terminal, a plain
line per step anywhere else (a pipe, a CI log, or ``NO_COLOR`` set), so that logs stay
readable and the report on stdout is never interleaved with it."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def interactive(stream: TextIO) -> bool:
    """A terminal that may be redrawn: not a pipe or a file, and colour not refused."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Steps:
    """What a command says while it works: how many steps there are (when it knows) and
    which one runs now. Calling it starts a step, which completes the one before."""

    def __init__(self, title: str, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.title = title
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.started = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._screen: TextIO | None = None
        self._counted = (0, 0)  # the last count a log was given, and its total

    @classmethod
    def silent(cls) -> Steps:
        return cls("", quiet=True)

    def __enter__(self) -> Steps:
        if not self.quiet and interactive(self.stream):
            self._screen = _own_descriptor(self.stream)
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self._screen),
                transient=True,  # the bar goes when the work is done; the report stays
                # what the command prints meanwhile goes above the bar when it shares the
                # bar's terminal; stdout sent to a file or a pipe is left alone
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=self.stream is sys.stderr,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._screen is not None and self._screen is not self.stream:
            self._screen.close()
        self._screen = None

    def total(self, steps: int) -> None:
        """How many steps the work takes, once that is known."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=steps)

    def count(self, done: int, total: int, text: str, unit: str = "") -> None:
        """``done`` of the ``total`` parts of the step ``text`` describes (the batches of
        an epoch): a bar is redrawn at every part; a log gets a line at each quarter only,
        so that it stays short (where ``done`` jumps past a quarter, at the count that
        passes it). A count that goes back, or another total, starts a new one."""
        if self.quiet:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, description=f"{self.title}: {text}")
            return
        before, counted = self._counted if self._counted[1] == total and self._counted[0] <= done else (0, total)
        self._counted = (done, counted)
        if any(before < total * quarter // 4 <= done for quarter in (1, 2, 3, 4)):
            print(f"{self.title}: {text} ({done}/{total}{' ' + unit if unit else ''})", file=self.stream, flush=True)

    def __call__(self, text: str, logged: bool = True) -> None:
        """Step ``text`` runs now (the one before it is done). ``logged=False`` shows it on
        a bar only: a step that reads and checks the user's input, whose refusal must be
        the one line a log holds."""
        if self.quiet:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.started, description=f"{self.title}: {text}")
        elif logged:
            print(f"{self.title}: {text}", file=self.stream, flush=True)
        self.started += 1


def _own_descriptor(stream: TextIO) -> TextIO:
    """``stream`` on a descriptor of the bar's own: code that points descriptor 2
    elsewhere for a while (``frameworks.quiet_stderr``, holding back TensorFlow's
    start-up lines) would otherwise catch the bar's redrawing and pass it on later."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return os.fdopen(os.dup(stream.fileno()), "w", encoding=getattr(stream, "encoding", None) or "utf-8")
    return stream
