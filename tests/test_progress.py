"""Progress goes to stderr: a bar on a terminal, a plain line per step in a log."""

from __future__ import annotations

import io
import os
import pty
import re
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


def _run(args: list[str], stderr_on_a_terminal: bool, cwd: Path = ROOT) -> tuple[str, str, int]:
    """``python -m conformance ARGS`` with stdout on a pipe and stderr on a pipe or a
    pseudo-terminal: (stdout, stderr, exit code)."""
    argv = [sys.executable, "-m", "conformance", *args]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {
        "TERM": "xterm",
        "COLUMNS": "100",
        "PYTHONPATH": str(ROOT),
    }
    if not stderr_on_a_terminal:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)
        return done.stdout, done.stderr, done.returncode
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, cwd=cwd, env=env, text=True)
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
    return out, drawn.decode(errors="replace"), process.returncode


def _check(stderr_on_a_terminal: bool) -> tuple[str, str]:
    """``check`` of inception_mnist in torch; (stdout, stderr) with the report's time
    line left out."""
    out, err, _ = _run(["check", "--frameworks", "torch", "--variant", "inception_mnist"], stderr_on_a_terminal)
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


def test_a_step_not_logged_shows_on_a_bar_only(monkeypatch):
    """A step that reads the user's input: on a bar, but not in a log, where a refusal of
    that input must be the one line."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    log, screen = io.StringIO(), Terminal()
    for stream in (log, screen):
        with progress.Steps("port", stream) as steps:
            steps("reading a.pth", logged=False)
            assert steps._bar is None or steps._bar.tasks[0].description == "port: reading a.pth"
            steps("writing b.npz")
        assert steps.started == 2
    assert log.getvalue() == "port: writing b.npz\n"
    assert "\x1b[" in screen.getvalue()


def test_a_count_that_jumps_past_a_quarter_still_logs_it():
    log = io.StringIO()
    with progress.Steps("verify", log) as steps:
        for done in (5, 9, 12, 15):  # 15 replays, counted after each first mistake's group
            steps.count(done, 15, "diagnosis", "replays")
        for done in (1, 2, 3):  # another count starts again
            steps.count(done, 3, "every input", "replays")
    assert [line.split("(")[1] for line in log.getvalue().splitlines()] == [
        *("5/15 replays)", "9/15 replays)", "12/15 replays)", "15/15 replays)"),
        *("1/3 replays)", "2/3 replays)", "3/3 replays)"),
    ]


def _both(args: list[str], cwd: Path = ROOT) -> tuple[str, list[str], str]:
    """``args`` with stderr on a pipe, then on a terminal: (stdout, both alike, with its
    elapsed seconds left out; the piped stderr's lines; what the terminal was drawn)."""
    piped_out, piped_err, code = _run(args, stderr_on_a_terminal=False, cwd=cwd)
    shown_out, shown_err, shown_code = _run(args, stderr_on_a_terminal=True, cwd=cwd)
    assert "Traceback" not in piped_err + shown_err, piped_err + shown_err
    assert code == shown_code, (code, shown_code, piped_err)

    def timeless(text: str) -> str:
        return re.sub(r" in \d+\.\d s$", "", text, flags=re.MULTILINE)

    assert timeless(shown_out) == timeless(piped_out)  # stdout, untouched by the bar
    assert "\x1b[?25l" in shown_err  # a live bar, redrawn in place
    return timeless(piped_out), piped_err.splitlines(), shown_err


def test_init_and_port_show_their_steps(tmp_path):
    pytest.importorskip("torch")
    out, lines, drawn = _both(["init", "m.npz", "--variant", "inception_mnist", "--force"], tmp_path)
    assert out.endswith("PASS\n")
    assert lines == [
        "init: writing m.npz (canonical numpy archive)",
        "init: proving m.npz: the source in torch",
        "init: proving m.npz: the written file loaded, both run on a seeded input",
    ]
    assert not any(f"{line}\r\n" in drawn for line in lines)  # redrawn on the bar, not logged
    out, lines, drawn = _both(["port", "m.npz", "m.pth", "--variant", "inception_mnist", "--force"], tmp_path)
    assert out.startswith("read   m.npz") and out.endswith("PASS\n")  # the log stays on stdout
    assert lines == [  # reading m.npz is on the bar only: a refusal of it stays one line
        "port: writing m.pth (PyTorch state_dict)",
        "port: proving m.pth: the source in torch",
        "port: proving m.pth: the written file loaded, both run on a seeded input",
    ]
    assert not any(f"{line}\r\n" in drawn for line in lines)


def test_a_refusal_while_reading_stays_one_line_in_a_log(tmp_path):
    """The negative control of the steps shown on a bar only: SRC refused as it is read."""
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    out, err, code = _run(["port", "bad.npz", "b.pth", "--variant", "inception_mnist"], False, cwd=tmp_path)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), err


SEEDED = """
import torch

from tests import user_nets


def build():
    torch.manual_seed(0)
    return user_nets.d2l_softmax()
"""


def test_verify_shows_its_steps_and_counts_the_diagnosis(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "seeded.py").write_text(SEEDED)
    args = ["verify", f"{tmp_path / 'seeded.py'}:build", "--input-size", "96", "--batch", "1"]
    out, lines, drawn = _both(args)
    assert "`softmax-output`" in out
    assert lines[0] == "verify: googlenet_d2l at 96 x 96, batch 1: your model and the reference"
    counted = [re.fullmatch(r"verify: diagnosis: (.+) \((\d+)/(\d+) replays\)", line) for line in lines[1:]]
    assert all(counted), lines
    phases = {m[1]: (int(m[2]), int(m[3])) for m in counted if m is not None}
    assert list(phases) == ["the catalogue on the first image", "the replays that may agree, on every input"]
    assert all(done == total for done, total in phases.values())  # each count's last line: all done
    assert not any(f"{line}\r\n" in drawn for line in lines)


def test_a_verify_pairing_refusal_stays_one_line_in_a_log():
    out, err, code = _run(["verify", "tests/user_nets.py:d2l", "--variant", "googlenet"], False)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), err


def test_check_distributed_shows_one_step_per_case():
    pytest.importorskip("torch")
    args = ["check", "--distributed", "--variant", "inception_mnist", "--frameworks", "torch"]
    out, lines, drawn = _both(args)
    assert "distributed: PASS (1/1 cases)" in out
    assert lines == ["check: inception_mnist at 31: torch, 2 workers"]
    assert "check: inception_mnist at 31: torch, 2 workers" in drawn and not any(
        f"{line}\r\n" in drawn for line in lines
    )


HELD = """
import time
from conformance import frameworks, progress

with progress.Steps("load") as steps:
    steps("importing")
    with frameworks.quiet_stderr():  # as verify loads a model, and impl_keras imports TensorFlow
        steps("held")
        time.sleep(0.5)
    steps("after")
    time.sleep(0.3)
"""


def test_the_bar_is_not_caught_by_stderr_held_back():
    """``frameworks.quiet_stderr`` points descriptor 2 at a file for a while and passes on
    what it caught: a bar drawn there would come back as text above the live bar."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm", "PYTHONPATH": str(ROOT)}
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", HELD], stderr=follower, cwd=ROOT, env=env)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = drawn.decode(errors="replace")
    assert "load: held" in text  # drawn while descriptor 2 was held back
    assert text.count("\x1b[?25l") == 1  # one bar, never a second drawing passed on as text
