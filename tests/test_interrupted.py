"""What an interrupted run leaves: a signal removes the temporary file and says one line,
a held signal waits for the statements it holds, and what ``kill -9`` leaves (a
temporary file, a staging directory) is named by the next run with its remedy."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import files, interrupts

from .conftest import backend_or_skip, cli, mnist_pth
from .helpers import TMP, command, leftovers

ROOT = Path(__file__).resolve().parents[1]


def interrupt_port(tmp_path: Path, sig: int, attempts: int = 3) -> tuple[subprocess.Popen, str, str]:
    """Start a port, wait until its temporary file exists, send ``sig``. The file exists
    for most of a second; a port that finished cleanly before this process looked (a
    loaded machine can keep it from running that long) is started again."""
    src = tmp_path / "g.pth"
    if not src.exists():
        mnist_pth(src, "googlenet")
    dst = tmp_path / "g.npz"
    for _ in range(attempts):
        p = subprocess.Popen(
            command("port", str(src), str(dst), "--variant", "googlenet"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if leftovers(tmp_path):
            break
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"the port failed before it wrote its temporary file: {err}"
        dst.unlink()  # it finished before the file was seen: try again
    else:
        raise AssertionError(f"the port finished {attempts} times before its temporary file was seen")
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return p, out, err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_removes_the_temporary_file_and_says_one_line(tmp_path, sig, code):
    p, _, err = interrupt_port(tmp_path, sig)
    assert p.returncode == code, (p.returncode, err)
    said = err.strip().splitlines()  # one line, after port's progress lines (it was writing or proving)
    assert said[-1] == f"interrupted by {signal.Signals(sig).name}: nothing was written", err
    assert all(line.startswith("port: ") for line in said[:-1]), err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["g.pth"]


def test_after_kill_9_the_next_run_names_the_stale_file(tmp_path):
    p, _, _ = interrupt_port(tmp_path, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    (stale,) = leftovers(tmp_path)
    r = cli("port", str(tmp_path / "g.pth"), str(tmp_path / "g.npz"), "--variant", "googlenet")
    assert r.returncode == 0, r.stderr
    assert "is a temporary file left by an interrupted run of this suite" in r.stderr
    assert f"remove it with: rm -- {tmp_path / stale}" in r.stderr
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / stale).unlink()


def test_a_held_signal_waits_for_the_statements_then_interrupts():
    """train saves an epoch and records it as saved under signals_held(): a SIGINT in
    between must not make the CLI report "no epoch was complete" while the epoch's files
    are on disk (seen under load in test_resume). Negative control: without the hold,
    the signal cuts the statements short."""
    done: list[str] = []
    with pytest.raises(interrupts.Interrupted) as caught, files.signals(), interrupts.signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler has run by now
        done.append("saved")
        done.append("recorded")
    assert done == ["saved", "recorded"] and caught.value.signum == signal.SIGINT
    done.clear()
    with pytest.raises(interrupts.Interrupted), files.signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("saved")
    assert done == []


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    return int(done.stdout)


def test_stale_staging_directories_are_named_with_their_remedy(tmp_path):
    """Row 13: the scan looked at files only. A directory named as a temporary (and one
    named as earlier versions named their staging directories) whose process is gone is
    reported with ``rm -r``; a live process's, or an unrelated hidden directory, is not."""
    dead = _dead_pid()
    stale = tmp_path / f".sm.{dead}-abcdef{TMP}"
    (stale / "model" / "variables").mkdir(parents=True)
    (stale / "model" / "variables" / "v.data").write_bytes(b"x" * 100)
    old = tmp_path / f".sm.tmp-{dead}-a1b2c3d4"
    old.mkdir()
    (tmp_path / f".sm.{os.getpid()}-abcdef{TMP}").mkdir()  # ours, in progress
    (tmp_path / ".git").mkdir()
    assert files.stale_temporaries(tmp_path) == sorted([stale, old])
    notes: list[str] = []
    files.check_output(tmp_path / "x.npz", False, "DST", notice=notes.append)
    assert len(notes) == 2 and all("remove it with: rm -r -- " in n for n in notes), notes
    assert any(
        n.startswith(f"note: {stale} is a temporary directory left by an interrupted run of this suite (100 bytes)")
        for n in notes
    ), notes


def test_staging_directories_are_named_as_temporaries(tmp_path, monkeypatch):
    """What a staged SavedModel or Gluon pair lives in is what the scan looks for, and a
    signal's cleanup removes it."""
    from conformance.formats import staging

    stage = staging.Staged(tmp_path / "sm", "directory", {"saved_model.pb": b"pb", "variables/": b""})
    assert stage.root.parent == tmp_path and stage.root.name.startswith(".sm.") and TMP in stage.root.name
    monkeypatch.setattr(files, "_alive", lambda pid: False)
    assert files.stale_temporaries(tmp_path) == [stage.root]
    assert files.remove_temporaries() >= 1 and not stage.root.exists()
    stage.discard()


def test_kill_9_during_a_savedmodel_port_is_named_by_the_next_run(tmp_path):
    """Row 13 as reported: ``kill -9`` while ``port ... --to savedmodel`` stages its
    directory; the next run into the same directory names what was left."""
    backend_or_skip("keras")
    src = mnist_pth(tmp_path / "a.pth")
    out = tmp_path / "ps"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = command("port", str(src), str(out / "sm"), "--to", "savedmodel")
    child = subprocess.Popen([*args, "--variant", "inception_mnist"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(TMP in p.name for p in out.iterdir()) and time.monotonic() < deadline:
            assert child.poll() is None, "the port ended before its staging directory appeared"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    left = [p for p in out.iterdir() if TMP in p.name]
    assert len(left) == 1 and left[0].is_dir(), left
    notes: list[str] = []
    files.check_output(out / "x.npz", False, "DST", notice=notes.append)
    assert len(notes) == 1 and f"{left[0]} is a temporary directory" in notes[0] and "rm -r -- " in notes[0]
