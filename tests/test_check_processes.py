"""``check`` with each framework in a process of its own (conformance.check.processes):
the same report as in one process, a child that dies is its framework's failure alone,
nothing is left behind, and a broken port in a child still fails the check."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import frameworks
from conformance.check import harness, processes, report

from .conftest import ROOT, installed

VARIANT = "inception_mnist"  # the smallest: one size, 28
FAULTY = "tests.faulty_port"


@pytest.fixture(autouse=True)
def own_tmp(tmp_path, monkeypatch):
    """The children's temporary directory under ``tmp_path``, to see that it goes."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path
    assert _ours(tmp_path) == []


def _ours(directory: Path) -> list[Path]:
    """What the check left in ``directory`` (torch's inductor keeps a cache there too)."""
    return [path for path in directory.iterdir() if "conformance" in path.name]


def _in_children(names):
    with processes.children(names) as (backends, skipped):
        return harness.run([VARIANT], backends, skipped)


def _without_timings(doc):
    return {k: v for k, v in doc.items() if k != "timings"}


def test_the_report_from_children_equals_the_one_from_one_process():
    """Training too: in children the frameworks train at once, and compare the same."""
    names = [fw for fw in ("torch", "keras", "mxnet") if fw in installed()]
    alone = harness.run([VARIANT], {fw: installed()[fw] for fw in names}, {}, train=True)
    with processes.children(names) as (backends, skipped):
        apart = harness.run([VARIANT], backends, skipped, train=True)
    assert apart.passed and alone.passed and apart.variants[0].training
    assert _without_timings(report.to_json(apart)) == _without_timings(report.to_json(alone))
    assert set(apart.timings) == set(names)


@pytest.mark.parametrize(("how", "says"), [("exit", "exited with 3"), ("kill", "was killed by SIGKILL")])
def test_a_child_that_dies_is_its_frameworks_failure_and_the_others_stand(monkeypatch, how, says):
    monkeypatch.setenv("FAULTY_PORT", how)
    checked = _in_children(["torch", FAULTY, "mxnet"])
    variant = checked.variants[0]
    died = variant.errors[f"{FAULTY} at 28"]
    assert died.startswith(f"ChildDied: {FAULTY}'s process {says}; its last words: ")
    assert f"faulty port: about to {how} in stages" in died
    assert f"{FAULTY} round trip" in variant.errors  # the dead process answers nothing more
    rows = variant.sizes[0].stages
    assert all(set(row.shapes) == {"torch", "mxnet"} and row.passed for row in rows)
    assert variant.roundtrip["torch -> mxnet -> torch"] == []
    assert not checked.passed


def test_a_child_that_dies_in_training_is_started_again_for_inference(monkeypatch):
    """Training runs first: without a new process the framework's every inference row
    would go with the one that died."""
    monkeypatch.setenv("FAULTY_PORT", "train-kill")
    with processes.children(["torch", FAULTY]) as (backends, skipped):
        checked = harness.run([VARIANT], backends, skipped, train=True)
        restarted = backends[FAULTY].generation
    variant = checked.variants[0]
    died = next(error for key, error in variant.errors.items() if key.startswith(f"{FAULTY} training"))
    assert f"ChildDied: {FAULTY}'s process was killed by SIGKILL" in died and "about to be killed in training" in died
    rows = variant.sizes[0].stages
    assert rows and all(set(row.shapes) == {"torch", FAULTY} and row.passed for row in rows)
    assert variant.roundtrip[f"torch -> {FAULTY} -> torch"] == []
    assert restarted == 1 and not checked.passed


def test_a_child_that_keeps_dying_is_started_again_at_most_restarts_times(monkeypatch):
    monkeypatch.setenv("FAULTY_PORT", "exit")
    monkeypatch.setattr(processes, "RESTARTS", 1)
    with processes.children([FAULTY]) as (backends, _):
        child = backends[FAULTY]
        model = child.build(VARIANT)
        with pytest.raises(processes.ChildDied, match="exited with 3"):
            child.stages(model, np.zeros((1, 1, 28, 28), np.float32))
        with pytest.raises(processes.ChildDied, match="the object asked for lived in its process that died"):
            model.eval()  # the dead process's model is gone with it
        again = child.build(VARIANT)  # a new process
        assert child.generation == 1
        with pytest.raises(processes.ChildDied, match="exited with 3"):
            child.stages(again, np.zeros((1, 1, 28, 28), np.float32))
        with pytest.raises(processes.ChildDied, match="died 2 times; it is not started again"):
            child.build(VARIANT)


def test_a_broken_port_in_a_child_fails_the_stage_it_breaks(monkeypatch):
    monkeypatch.setenv("FAULTY_PORT", "skew")
    checked = _in_children(["torch", FAULTY])
    failed = [row.stage for row in checked.variants[0].sizes[0].stages if not row.passed]
    assert failed[0] == "conv2" and not checked.passed
    assert not checked.variants[0].errors


@pytest.mark.parametrize("users", [None, "glibc.malloc.arena_max=2"])
def test_a_child_starts_with_mallocs_tunables_and_the_parents_environment_stays(monkeypatch, users):
    """glibc reads GLIBC_TUNABLES when a process starts: the child must start with it,
    and a user's own setting is theirs to keep."""
    if users is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", users)
    with processes.children(["torch"]) as (backends, _):
        started = Path(f"/proc/{backends['torch'].process.pid}/environ").read_bytes().split(b"\0")
    assert f"GLIBC_TUNABLES={users or processes.TUNABLES}".encode() in started
    assert os.environ.get("GLIBC_TUNABLES") == users


def test_a_framework_that_cannot_load_in_its_child_is_skipped_with_why():
    with processes.children(["torch", "no_such_module_here"]) as (backends, skipped):
        assert list(backends) == ["torch"]
        assert "no_such_module_here: cannot import it as a framework" in skipped["no_such_module_here"]


def test_in_one_process_a_keras_backend_other_than_the_imported_one_is_skipped(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    loaded, skipped = frameworks.load(["keras-jax", "keras-torch"])
    assert not loaded
    assert skipped["keras-jax"].startswith("needs KERAS_BACKEND=jax before its import")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_children_and_removes_the_temporary_directory(tmp_path, signum):
    environment = {**os.environ, "FAULTY_PORT": "hang", "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "conformance", "check", "--variant", VARIANT, "--frameworks", f"torch,{FAULTY}"]
    check = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        logs: list[Path] = []
        while not any("about to hang" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and check.poll() is None, check.communicate()
            time.sleep(0.2)
            logs = list(tmp_path.glob("*/*.stderr"))
        hanging = int(next(log for log in logs if "about to hang" in log.read_text()).read_text().split("pid ")[1][:-2])
        check.send_signal(signum)
        _, err = check.communicate(timeout=60)
    finally:
        check.kill()
    assert check.returncode == 128 + signum, err
    assert _ours(tmp_path) == []
    with pytest.raises(ProcessLookupError):
        os.kill(hanging, 0)  # the framework's process ended with the check


@pytest.mark.parametrize("kept_out", [True, False])
def test_keras_process_keeps_jax_out_and_tensorflow_imports_it_otherwise(kept_out):
    """The negative control: without the finder, importing Keras on TensorFlow brings
    JAX in (TFLite's converter), which is what the Keras process keeps out."""
    if "keras" not in installed() or importlib.util.find_spec("jax") is None:
        pytest.skip("needs keras and jax")
    finder = "sys.meta_path.insert(0, processes._KeptOut(processes.KEPT_OUT['keras']))" if kept_out else ""
    code = "\n".join(["import sys", "from conformance.check import processes", finder, "import impl_keras"])
    code += "\nprint('jax' in sys.modules)"
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, check=False, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(not kept_out)
