"""Data-parallel training in each framework's own engine (issue 14): N workers compute
what one process computes; the BatchNorm rules hold; the negative controls fail; a
dead worker ends the run with one line and a checkpoint --resume continues.

Every test starts real engine processes (DDP over gloo, MirroredStrategy, KVStore
dist_sync) on small inputs: 2 workers x 2 images at 32 x 32."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conformance import spec
from conformance.canonical import load
from conformance.check import distributed, distributed_runs, replica_statistics
from conformance.train import launch
from conformance.train.worker import trainer_class
from conformance.world import World

from .conftest import ROOT, backend_or_skip
from .distributed_faults import FAULTS
from .helpers import command

FRAMEWORKS = ("torch", "keras", "mxnet")
SIZE = 32  # googlenet_d2l and googlenet_bn admit it; parity does not depend on the size


# -- the world: shards and weights --------------------------------------------------------


@pytest.mark.parametrize("n, workers", [(4, 2), (5, 2), (7, 3), (3, 3)])
def test_shards_cover_the_global_batch_in_order_and_weights_average_to_one(n, workers):
    w = World(workers)
    bounds = [w.bounds(n, r) for r in range(workers)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, in order
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    assert bounds == [(int(c[0]), int(c[-1]) + 1) for c in np.array_split(np.arange(n), workers)]
    assert np.isclose(np.mean([w.weight(n, r) for r in range(workers)]), 1.0)


def test_a_global_batch_smaller_than_the_workers_is_refused():
    with pytest.raises(ValueError, match=r"--batch: a global batch of 1 leaves a worker of the 2"):
        World(2).check_batch(1)
    with pytest.raises(ValueError, match="--workers: expected a positive integer"):
        World(0)


# -- the default: what CI runs ------------------------------------------------------------


def test_the_default_variants_cover_every_case_the_engines_treat_apart():
    """``check --distributed`` without ``--variant`` is CI's command (.ci/run): its variants
    must hold a net without aux heads or BatchNorm, one whose aux heads are built but not
    admitted at its size (no gradient), one whose aux heads train, and BatchNorm (the
    rules, and synchronised). The other variants add layers, not distributed cases."""
    seen = set()
    for variant in distributed.VARIANTS:
        p = distributed_runs.plan(variant)
        size = distributed.default_size(variant)
        assert p.variant.convs.norm is None, variant  # the parity path asserts N*b == one process
        seen.add("aux trained" if spec.aux_admits(p, size) else "aux not admitted" if p.aux else "plain")
    for variant in distributed.BATCHNORM_VARIANTS:
        assert distributed_runs.plan(variant).variant.convs.norm is not None, variant
        seen.add("batchnorm")
    assert seen == {"plain", "aux not admitted", "aux trained", "batchnorm"}
    assert "--variant" not in next(
        line for line in (ROOT / ".ci/run").read_text().splitlines() if "check --distributed" in line and line[0] != "#"
    )


# -- engine runs started ahead ----------------------------------------------------------


def test_engine_runs_started_ahead_are_given_by_key():
    def run(value, stop):
        if value is None:
            raise RuntimeError("worker 1 exited with status 1")
        return [{"x": np.array(value)}]

    with distributed_runs.Engines(2) as engines:
        for key, value in (("a", 1), ("b", 2), ("broken", None)):
            engines.start(key, functools.partial(run, value))
        assert engines.results("b")[0]["x"] == 2 and engines.results("a")[0]["x"] == 1
        assert engines.results("a") is None  # given once; not started: None, the caller runs it
        with pytest.raises(RuntimeError, match="worker 1 exited"):
            engines.results("broken")
        engines.start("b", functools.partial(run, 3))
        with pytest.raises(ValueError, match="engine run 'b' started twice"):
            engines.start("b", functools.partial(run, 4))


def test_an_exception_ends_the_engine_runs_under_way_and_starts_no_other():
    """A signal reaches the main thread only: leaving the block must end the run a thread
    waits on (its ``stop``), and start none of the queued ones."""
    began, stopped, ran = threading.Event(), [], []

    def waits(stop):
        began.set()
        stopped.append(stop.wait(60))
        return []

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt), distributed_runs.Engines(1) as engines:
        engines.start("under way", waits)
        engines.start("queued", lambda stop: ran.append(1))
        assert began.wait(10)
        raise KeyboardInterrupt
    assert stopped == [True] and not ran and time.monotonic() - t0 < 10


def test_a_stopped_launch_ends_its_processes_with_one_line(monkeypatch):
    """``launch.run(stop=...)`` in a thread: the workers (here, processes that would sleep
    a minute) are ended within the grace time, and the outcome says why."""
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    fake = lambda world: [launch.Process(f"worker {r}", {}, True, sleeper) for r in range(world.workers)]  # noqa: E731
    monkeypatch.setitem(launch.PROCESSES, "sleepers", fake)
    stop, outcome = threading.Event(), []
    t = threading.Thread(
        target=lambda: outcome.append(launch.run("sleepers", World(2), {}, io.StringIO(), io.StringIO(), stop))
    )
    t0 = time.monotonic()
    t.start()
    time.sleep(1)
    stop.set()
    t.join(launch.GRACE + 5)
    assert not t.is_alive() and time.monotonic() - t0 < launch.GRACE + 5
    assert outcome[0].code == 1 and outcome[0].failed == "stopped by the launcher's caller"


@pytest.mark.e2e
def test_the_report_with_engine_runs_started_ahead_equals_the_one_run_after_another(monkeypatch):
    """``run`` starts the engines' runs ahead (threads); each case must get its own run's
    results: BatchNorm, plain and synchronised (torch refuses it on a CPU), are the two
    runs of one variant that differ only by ``synchronized`` in the key."""
    b = backend_or_skip("torch")
    launched = []
    real = distributed_runs.distributed
    monkeypatch.setattr(
        distributed_runs, "distributed", lambda *a, **kw: launched.append(threading.current_thread()) or real(*a, **kw)
    )
    ahead = distributed.run({"torch": b}, ["googlenet_bn", "googlenet_bn"], {"googlenet_bn": SIZE})
    # each case's run once, in a thread of its own: none run again after one started ahead
    assert len(launched) == 2 and threading.main_thread() not in launched
    monkeypatch.undo()
    one_by_one = [
        distributed.check_framework("torch", b, "googlenet_bn", SIZE, 2, seed=0, synchronized=sync)[0]
        for sync in (False, True)
    ]
    assert [c.unsupported for c in ahead] == [False, True]
    assert distributed.render(ahead) == distributed.render(one_by_one)


# -- parity without BatchNorm, and its negative controls ---------------------------------


def _case(fw: str, variant: str, **kw) -> distributed.Case:
    b = backend_or_skip(fw)
    case, _ = distributed.check_framework(fw, b, variant, SIZE, 2, seed=0, **kw)
    return case


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_two_workers_equal_one_process_with_the_global_batch(fw):
    case = _case(fw, "googlenet_d2l")
    assert case.error is None, case.error
    assert case.passed, distributed.render([case])
    rows = {r.quantity: r for r in case.rows}
    assert set(rows) == {"loss", "gradients of step 1", f"weights after step {distributed.STEPS}"}
    assert rows["gradients of step 1"].keys == rows[f"weights after step {distributed.STEPS}"].keys > 50
    # float64: the all-reduce leaves round-off only, float32's where the engine reduces in it
    carried = getattr(distributed.engine(fw), "REDUCES_IN", "float64")
    for r in case.rows:
        assert r.agreement.max_rel < (1e-10 if carried == "float64" else 1e-5), distributed.render([case])


@pytest.mark.e2e
@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_broken_engine_fails_the_parity(fw, fault):
    """Negative controls: gradients summed instead of averaged; every worker on shard 0
    (tests/distributed_faults.py, run in the engine's own worker processes)."""
    case = _case(fw, "googlenet_d2l", trainer=FAULTS[fault])
    assert case.error is None, case.error
    assert not case.passed, distributed.render([case])
    grads = next(r for r in case.rows if r.quantity == "gradients of step 1")
    assert grads.agreement.max_rel > 1e-2, distributed.render([case])  # far beyond the 1e-4 tolerance


def test_a_worker_steps_with_the_trainer_the_job_names():
    """The broken ports reach the workers by name only; a malformed name is refused."""
    engine = SimpleNamespace(Trainer=type("Trainer", (), {"shard": lambda self, rows, replica: (replica, rows)}))
    assert trainer_class(engine, None) is engine.Trainer
    same = trainer_class(engine, FAULTS["same-shard"])
    assert issubclass(same, engine.Trainer) and same().shard(4, 1) == (0, 4)
    with pytest.raises(ValueError, match=r"trainer: expected 'module:callable', got 'tests\.distributed_faults'"):
        trainer_class(engine, "tests.distributed_faults")


# -- BatchNorm: each engine's rule, asserted against NumPy --------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_batchnorm_statistics_follow_the_engines_stated_rule(fw):
    case = _case(fw, "googlenet_bn")
    assert case.error is None, case.error
    assert case.passed, distributed.render([case])
    assert case.rule["source"].startswith("https://github.com/")
    assert {r.quantity for r in case.rows} == {
        f"{q} of replica {r}, step {s}"
        for q, steps in (("batch statistics", (1,)), ("running statistics", (1, 2)))
        for r in (0, 1)
        for s in steps
    }


WRONG = {"own": "mean", "rank 0": "own", "mean": "own"}


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_wrong_running_statistics_rule_fails(fw):
    """Negative control: the running statistics asserted by another rule than the engine's."""
    rule = distributed.engine(fw).BATCHNORM
    wrong = {"batch": rule["batch"], "running": WRONG[rule["running"]]}
    case = _case(fw, "googlenet_bn", rule=wrong)
    assert case.error is None, case.error
    failed = {r.quantity for r in case.rows if not r.passed}
    assert failed and all(q.startswith("running statistics") for q in failed), distributed.render([case])
    assert max(r.agreement.max_rel for r in case.rows) > 1e-2, distributed.render([case])


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_synchronised_batchnorm_gives_the_global_batch_or_is_refused_by_name(fw):
    case = _case(fw, "googlenet_bn", synchronized=True)
    if case.unsupported:
        assert case.error and fw in {"torch", "mxnet"}, case.error
        assert "SyncBatchNorm" in case.error
        return
    assert case.error is None, case.error
    assert case.passed, distributed.render([case])


UNIT = "conv1.bn"
RULES = {
    "own": {"batch": "replica", "running": "own"},
    "mean": {"batch": "replica", "running": "mean"},
    "rank 0": {"batch": "replica", "running": "rank 0", "when": "before each forward"},
    "global": {"batch": "global", "running": "own"},
}


def _numpy_rules() -> dict[str, dict[str, list[dict[str, np.ndarray]]]]:
    p = distributed_runs.plan("googlenet_bn")
    rng = np.random.default_rng(0)
    params = {f"{UNIT}.running_mean": np.zeros(3), f"{UNIT}.running_var": np.ones(3)}

    def stats() -> list[dict[str, np.ndarray]]:
        return [{f"{UNIT}.batch_mean": rng.normal(size=3), f"{UNIT}.batch_var": rng.random(3) + 0.5} for _ in "ab"]

    shards, later = stats(), [stats()]
    return {
        name: replica_statistics.expected_statistics(p, params, shards, [2, 2], {UNIT: 4}, rule, later)
        for name, rule in RULES.items()
    }


def test_the_numpy_rules_tell_each_other_apart():
    """The assertion can fail: each rule predicts other running statistics, and where
    (after which step, in which replica) is what tells them apart."""
    e = _numpy_rules()
    key = f"{UNIT}.running_mean"
    step1, step2 = "running statistics/step 1", "running statistics/step 2"
    assert not np.allclose(e["own"][step1][0][key], e["own"][step1][1][key])  # each its own shard
    assert np.allclose(e["mean"][step1][0][key], e["mean"][step1][1][key])
    assert np.allclose(e["global"][step1][0][key], e["global"][step1][1][key])
    var = f"{UNIT}.running_var"  # the pooled variance holds the spread between the shards' means
    assert not np.allclose(e["global"][step1][0][var], e["mean"][step1][0][var])
    # DDP's rank-0 broadcast shows only from step 2: replica 1 starts from replica 0's
    assert all(np.allclose(e["rank 0"][step1][r][key], e["own"][step1][r][key]) for r in (0, 1))
    assert not np.allclose(e["rank 0"][step2][1][key], e["own"][step2][1][key])
    assert np.allclose(e["rank 0"][step2][0][key], e["own"][step2][0][key])


# -- train --workers: the same run, one writer, a dead worker, --resume ------------------


def _train(fw: str, out: Path, *extra: str) -> subprocess.Popen:
    argv = command("train", "--framework", fw, "--variant", "googlenet_d2l")
    argv += ["--limit", "48", "--batch", "16", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_two_workers_train_what_one_process_trains(fw, tmp_path):
    """The README command: one epoch (3 global batches of 16) with 2 workers and without;
    the same losses (float32: the workers sum in another order) and one set of outputs."""
    backend_or_skip(fw)
    history = {}
    for workers in (1, 2):
        out = tmp_path / str(workers)
        out.mkdir()
        run = _train(fw, out, "--epochs", "1", "--workers", str(workers))
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-2000:]
        assert ("2 workers (" in stdout) == (workers == 2), stdout
        assert sorted(p.name for p in out.iterdir()) == sorted(
            f"googlenet_d2l-{fw}{suffix}" for suffix in ("-epoch1.safetensors", ".json", ".png", ".state.safetensors")
        )
        history[workers] = json.loads((out / f"googlenet_d2l-{fw}.json").read_text())["epochs"][0]
    assert history[2]["loss"] == pytest.approx(history[1]["loss"], rel=1e-5)
    assert history[2]["train_acc"] == history[1]["train_acc"]


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def _descends(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        pid = _parent(pid)
    return False


def _workers(root: int) -> list[int]:
    """The pids of the running workers (not an engine's scheduler or server) that the
    run ``root`` started: another job's workers on the same machine are not its."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"conformance.train.worker" in (entry / "cmdline").read_bytes() and _descends(int(entry.name), root):
                    found.append(int(entry.name))
    return sorted(found)


@pytest.mark.e2e
@pytest.mark.parametrize("fw", ["torch", "mxnet"])
def test_a_killed_worker_ends_the_run_with_one_line_and_resume_continues_it(fw, tmp_path):
    """A worker killed after the first epoch: every process ends (MXNet's peers would wait
    in dist_sync forever), one line names it and what is kept, the last checkpoint is
    whole, and --resume finishes the run."""
    backend_or_skip(fw)
    run = _train(fw, tmp_path, "--epochs", "3", "--workers", "2")
    state = tmp_path / f"googlenet_d2l-{fw}.state.safetensors"  # written last: epoch 1 is complete
    deadline = time.monotonic() + 300
    while not state.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _workers(run.pid)
    assert len(workers) == 2 and run.poll() is None, run.communicate()
    os.kill(workers[-1], signal.SIGKILL)
    _, err = run.communicate(timeout=120)  # bounded: the launcher ends every process
    assert run.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "was killed by SIGKILL" in errors[0] and "continue with --resume" in errors[0], errors
    # nothing left running: the workers it had, orphaned or not, are gone
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    kept = sorted(tmp_path.glob("*-epoch*.safetensors"))
    load(kept[-1], spec.resolve("googlenet_d2l"))  # the last checkpoint is whole
    resumed = _train(fw, tmp_path, "--epochs", "3", "--workers", "2", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed after epoch" in out
    load(tmp_path / f"googlenet_d2l-{fw}-epoch3.safetensors", spec.resolve("googlenet_d2l"))
