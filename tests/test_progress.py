"""Progress goes to stderr: a bar on a terminal, a plain line per step in a log."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import progress

ROOT = Path(__file__).resolve().parents[1]


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


def _check(stderr_on_a_terminal: bool) -> tuple[str, str]:
    """``check`` of inception_mnist in torch, stdout on a pipe and stderr on a pipe or a
    pseudo-terminal; (stdout, stderr) with the report's time line left out."""
    argv = [sys.executable, "-m", "conformance", "check", "--frameworks", "torch", "--variant", "inception_mnist"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm", "COLUMNS": "100"}
    if not stderr_on_a_terminal:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
        out, err = done.stdout, done.stderr
    else:
        leader, follower = pty.openpty()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, cwd=ROOT, env=env, text=True)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        os.close(leader)
        out = process.communicate(timeout=600)[0]
        err = drawn.decode(errors="replace")
    assert "Traceback" not in err, err
    return "\n".join(line for line in out.splitlines() if not line.startswith("  time: ")), err


def test_check_reports_on_stdout_alike_and_shows_progress_on_stderr_by_its_kind():
    pytest.importorskip("torch")
    piped_out, piped_err = _check(stderr_on_a_terminal=False)
    assert piped_err.splitlines() == [
        "check: inception_mnist: build and load",
        "check: inception_mnist at 28: torch",
        "check: inception_mnist: round trips",
    ]
    shown_out, shown_err = _check(stderr_on_a_terminal=True)
    assert shown_out == piped_out and "PASS: all" in shown_out  # the report, untouched by the bar
    assert "\x1b[?25l" in shown_err and "check: inception_mnist" in shown_err  # a live bar, redrawn
    assert "check: inception_mnist: build and load\r\n" not in shown_err  # not the log's lines
