"""``conformance.files`` and what every command promises about the files it writes
(issue 9, cases 1, 3, 4, 7): only regular files are replaced, outputs are checked before
the work, a full disk is bad input (exit 2, nothing left, the old file intact), OS errors
are one line, and a signal leaves no temporary file behind (or, after ``kill -9``, one
the next run recognises)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, files, interrupts, spec
from conformance.__main__ import main
from conformance.formats.port import PortError, port

from . import hostile
from .conftest import backend_or_skip, cli

ROOT = Path(__file__).resolve().parents[1]
TMP = ".conformance-tmp"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TMP in p.name or p.name.endswith(".tmp"))


def mnist_pth(path: Path, variant: str = "inception_mnist") -> Path:
    t = backend_or_skip("torch")
    import torch

    model = t.build(variant)
    t.from_canonical(model, canonical.random_params(model.plan, 0))
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def immutable():
    """chattr +i on a path (undone afterwards): refuses writes even to root, which
    permission bits cannot. Skipped where the file system has no such flag."""
    done: list[Path] = []

    def make(path: Path) -> Path:
        r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        if r.returncode:
            pytest.skip(f"chattr +i not available here: {r.stderr.strip()}")
        done.append(path)
        return path

    yield make
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of the given size (root only), unmounted afterwards."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False, capture_output=True
        )
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def char_device(path: Path) -> Path:
    """A character device of our own (the null device's numbers): replacing it by
    mistake harms nothing, unlike /dev/null itself."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    return path


# --------------------------------------------------------------------------------------
# conformance.files
# --------------------------------------------------------------------------------------


def test_atomic_write_refuses_what_it_must_not_replace(tmp_path, monkeypatch):
    with pytest.raises(files.OutputError, match=r"does not exist"):
        files.atomic_write(tmp_path / "nope" / "x.bin", b"data")
    (tmp_path / "x.bin").write_bytes(b"old")
    with pytest.raises(files.OutputError, match=r"already exists"):
        files.atomic_write(tmp_path / "x.bin", b"data")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(files.OutputError, match=r"a FIFO \(named pipe\), not a regular file"):
        files.atomic_write(tmp_path / "fifo", b"data", overwrite=True)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(files.OutputError, match=r"No space left on device"):
        files.atomic_write(tmp_path / "x.bin", b"data", overwrite=True)
    assert (tmp_path / "x.bin").read_bytes() == b"old" and not leftovers(tmp_path)
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)


def test_a_long_name_is_not_refused_for_its_temporary_files_sake(tmp_path):
    """Issue 9, case 8: a 247-character DST was refused because the temporary name was longer."""
    name = "a" * 238 + ".safetensors"  # 250 bytes: the file system takes 255
    files.atomic_write(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert len(files.temporary_name(tmp_path / name, ".weights.h5").encode()) <= 255
    with pytest.raises(files.OutputError, match=r"the name is 256 bytes; the file system takes 255"):
        files.check_output(tmp_path / ("b" * 256), False, "DST")


def test_port_to_a_247_character_name(tmp_path):
    src = mnist_pth(tmp_path / "a.pth")
    dst = tmp_path / ("w" * 241 + ".keras")
    backend_or_skip("keras")
    assert port(src, dst, "inception_mnist").passed and dst.exists()
    assert not leftovers(tmp_path)


def test_symlink_dst_is_replaced_and_its_target_untouched(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    files.atomic_write(link, b"new", overwrite=True)
    assert target.read_text() == "keep me" and not link.is_symlink() and link.read_bytes() == b"new"


def test_check_output_tries_the_directory_instead_of_trusting_permission_bits(tmp_path, immutable):
    """Root passes os.access everywhere; an immutable directory still refuses a new file."""
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    with pytest.raises(files.OutputError, match=r"--json .*locked/r.json: directory .*locked is not writable"):
        files.check_output(locked / "r.json", False, "--json")
    with pytest.raises(files.OutputError, match=r"cannot write in /sys: "):
        files.check_output(Path("/sys/r.json"), False, "--json")


def test_an_immutable_file_is_refused_before_the_work(tmp_path, immutable):
    (tmp_path / "r.json").write_text("old")
    immutable(tmp_path / "r.json")
    with pytest.raises(files.OutputError, match=r"r.json: the file is immutable \(chattr\); it cannot be replaced"):
        files.check_output(tmp_path / "r.json", True, "--json")


def test_stale_temporaries_are_recognised_and_named_with_their_remedy(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    stale = tmp_path / f".x.npz.{dead.stdout.strip()}-abcdef{TMP}.npz"
    stale.write_bytes(b"half")
    live = tmp_path / f".x.npz.{os.getpid()}-abcdef{TMP}.npz"  # ours, in progress
    live.write_bytes(b"half")
    assert files.stale_temporaries(tmp_path) == [stale]
    notes: list[str] = []
    files.check_output(tmp_path / "x.npz", False, "DST", notice=notes.append)
    assert notes == [
        f"note: {stale} is a temporary file left by an interrupted run of this suite (4 bytes); "
        f"remove it with: rm -- {stale}"
    ]


# --------------------------------------------------------------------------------------
# Case 1: --force never destroys a special file
# --------------------------------------------------------------------------------------


def test_port_force_refuses_a_fifo_and_a_device(tmp_path):
    src = mnist_pth(tmp_path / "a.pth")
    os.mkfifo(tmp_path / "fifo.npz")
    device = char_device(tmp_path / "null.npz")
    for dst, kind in ((tmp_path / "fifo.npz", "a FIFO"), (device, "a character device")):
        r = cli("port", str(src), str(dst), "--variant", "inception_mnist", "--force")
        assert r.returncode == 2 and (f"{kind} (named pipe)" in r.stderr or f"{kind}, not" in r.stderr), r.stderr
        assert "only regular files are ever replaced" in r.stderr and "Traceback" not in r.stderr
    assert stat.S_ISFIFO((tmp_path / "fifo.npz").stat().st_mode)
    assert stat.S_ISCHR(device.stat().st_mode)
    assert not leftovers(tmp_path)


def test_check_json_and_train_force_refuse_special_files(tmp_path):
    device = char_device(tmp_path / "report.json")
    r = cli("check", "--frameworks", "torch", "--variant", "inception_mnist", "--json", str(device), "--force")
    assert r.returncode == 2 and "a character device, not a regular file" in r.stderr, r.stderr
    assert stat.S_ISCHR(device.stat().st_mode) and "PASS" not in r.stdout  # refused before the check
    os.mkfifo(tmp_path / "inception_mnist-torch.json")
    args = ["--framework", "torch", "--variant", "inception_mnist", "--epochs", "1", "--limit", "16"]
    r = cli("train", *args, "--out", str(tmp_path), "--force")
    assert r.returncode == 2 and "inception_mnist-torch.json: a FIFO (named pipe), not a regular file" in r.stderr
    assert stat.S_ISFIFO((tmp_path / "inception_mnist-torch.json").stat().st_mode)
    assert not list(tmp_path.glob("*.safetensors"))  # refused before training


def test_port_keeps_a_symlinks_target(tmp_path):
    src = mnist_pth(tmp_path / "a.pth")
    (tmp_path / "target.npz").write_bytes(b"keep me")
    (tmp_path / "link.npz").symlink_to(tmp_path / "target.npz")
    assert port(src, tmp_path / "link.npz", "inception_mnist", force=True).passed
    assert (tmp_path / "target.npz").read_bytes() == b"keep me"
    assert set(np.load(tmp_path / "link.npz").files) == set(canonical.canonical_shapes(spec.resolve("inception_mnist")))


# --------------------------------------------------------------------------------------
# Case 3: a full disk is bad input
# --------------------------------------------------------------------------------------


def test_weights_h5_to_a_full_disk_exits_2_not_a_segfault(tmp_path, small_fs):
    """HDF5 segfaulted when its own write hit a full disk (3 of 3 runs)."""
    backend_or_skip("keras")
    src = mnist_pth(tmp_path / "a.pth", "googlenet")
    fs = small_fs("4m")
    (fs / "x.weights.h5").write_bytes(b"previous")
    r = cli("port", str(src), str(fs / "x.weights.h5"), "--variant", "googlenet", "--force")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert re.search(r"x.weights.h5: needs about 2\d.\d MB and the file system has \d.\d MB free", r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    assert (fs / "x.weights.h5").read_bytes() == b"previous" and sorted(p.name for p in fs.iterdir()) == [
        "x.weights.h5"
    ]


@pytest.mark.parametrize("name", ["x.weights.h5", "x.params", "x.pth", "x.npz", "x.keras"])
def test_a_disk_that_fills_during_the_write_leaves_nothing(tmp_path, small_fs, monkeypatch, name):
    """The free-space check passes (it is fooled here); the write itself fails: exit 2's
    PortError, no temporary file, the previous DST intact."""
    src = mnist_pth(tmp_path / "a.pth", "googlenet")
    fs = small_fs("8m")
    (fs / name).write_bytes(b"previous")
    monkeypatch.setattr(files, "check_space", lambda *a: None)
    with pytest.raises(PortError, match=rf"DST .*{name}: writing 2\d.\d MB failed: No space left on device"):
        port(src, fs / name, "googlenet", force=True)
    assert (fs / name).read_bytes() == b"previous" and sorted(p.name for p in fs.iterdir()) == [name]


def test_a_file_size_limit_is_a_clear_error(tmp_path):
    """RLIMIT_FSIZE (a quota, a container's limit): writes fail with EFBIG."""
    src = mnist_pth(tmp_path / "a.pth", "googlenet")
    m = hostile.run_measured(
        hostile.cli("port", str(src), str(tmp_path / "x.weights.h5"), "--variant", "googlenet"),
        env={"MEASURED_FSIZE": str(1 << 20)},
        ignore_xfsz=True,
    )
    assert m.returncode == 2, (m.returncode, m.stderr[-2000:])
    assert "x.weights.h5: writing 2" in m.stderr and "File too large" in m.stderr and "Traceback" not in m.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]


def test_train_refuses_a_disk_too_small_for_its_checkpoints(small_fs):
    fs = small_fs("1m")
    r = cli("train", "--framework", "torch", "--variant", "googlenet_d2l", "--epochs", "2", "--out", str(fs))
    assert r.returncode == 2 and "--out" in r.stderr and "the file system has" in r.stderr, r.stderr
    assert not list(fs.iterdir())


# --------------------------------------------------------------------------------------
# Case 4: outputs checked before the work; OS errors are one line, exit 2
# --------------------------------------------------------------------------------------


def test_check_json_into_a_directory_or_an_immutable_one(tmp_path, immutable):
    r = cli("check", "--frameworks", "torch", "--variant", "inception_mnist", "--json", str(tmp_path), "--force")
    assert r.returncode == 2 and "a directory, not a regular file" in r.stderr and "PASS" not in r.stdout
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    r = cli("check", "--frameworks", "torch", "--variant", "inception_mnist", "--json", str(locked / "r.json"))
    assert r.returncode == 2 and "is not writable" in r.stderr and "PASS" not in r.stdout, r.stderr


def test_train_into_an_immutable_directory_is_refused_before_training(tmp_path, immutable):
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    r = cli("train", "--framework", "torch", "--variant", "inception_mnist", "--epochs", "1", "--out", str(locked))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--out" in r.stderr and "locked" in r.stderr and "training" not in r.stdout


def test_port_over_an_immutable_dst_is_refused_before_the_work(tmp_path, immutable):
    src = mnist_pth(tmp_path / "a.pth")
    (tmp_path / "b.npz").write_bytes(b"old")
    immutable(tmp_path / "b.npz")
    r = cli("port", str(src), str(tmp_path / "b.npz"), "--variant", "inception_mnist", "--force")
    assert r.returncode == 2 and "b.npz: the file is immutable (chattr)" in r.stderr and "read " not in r.stdout
    assert "Traceback" not in r.stderr


def test_an_os_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from conformance.train import training

    def unreadable(*args):
        raise PermissionError(13, "Permission denied", "/data/train-images-idx3-ubyte")

    monkeypatch.setattr(training, "load_data", unreadable)
    assert main(["train", "--framework", "torch", "--variant", "inception_mnist", "--out", "/tmp"]) == 2
    assert capsys.readouterr().err == "error: /data/train-images-idx3-ubyte: Permission denied\n"


# --------------------------------------------------------------------------------------
# Case 7: signals leave no litter, and a kill -9's litter is recognised
# --------------------------------------------------------------------------------------


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
            [sys.executable, "-m", "conformance", "port", str(src), str(dst), "--variant", "googlenet"],
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
    assert err.strip().splitlines() == [f"interrupted by {signal.Signals(sig).name}: nothing was written"], err
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


# --------------------------------------------------------------------------------------
# Issue 24, rows 12 and 13
# --------------------------------------------------------------------------------------


def test_port_to_a_243_character_safetensors_name(tmp_path):
    """Row 12: the TF-checkpoint probe looked for DST + ".index" (260 bytes): "File name too long"."""
    src = tmp_path / "m.safetensors"
    canonical.save(canonical.random_params(spec.resolve("inception_mnist"), 0), src, spec.resolve("inception_mnist"))
    (tmp_path / "d").mkdir()
    dst = tmp_path / "d" / ("a" * 243 + ".safetensors")
    assert len(dst.name.encode()) == 255
    assert port(src, dst, "inception_mnist").passed and dst.exists()
    assert not leftovers(tmp_path / "d")


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
    args = [sys.executable, "-m", "conformance", "port", str(src), str(out / "sm"), "--to", "savedmodel"]
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
