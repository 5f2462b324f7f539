"""Progress goes to stderr: a bar on a terminal, a plain line per step in a log."""

from __future__ import annotations

import io

from conformance import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_plain_line_per_step():
    log = io.StringIO()
    with progress.Steps("check", log) as steps:
        steps.total(2)
        steps("googlenet")
        steps("googlenet_bn")
    assert log.getvalue() == "check: googlenet\ncheck: googlenet_bn\n"


def test_a_terminal_gets_a_bar_that_leaves_nothing_behind(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    with progress.Steps("bench", screen) as steps:
        steps.total(3)
        steps("round 1/3: torch eager")
    drawn = screen.getvalue()
    assert "\x1b[" in drawn and "bench: round 1/3" not in drawn.splitlines()  # redrawn in place, not logged
    assert steps.started == 1


def test_no_color_asks_for_plain_lines_even_on_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    screen = Terminal()
    with progress.Steps("train", screen) as steps:
        steps("epoch 1/2")
    assert screen.getvalue() == "train: epoch 1/2\n"


def test_silent_says_nothing():
    with progress.Steps.silent() as steps:
        steps("anything")
    assert steps.started == 0
