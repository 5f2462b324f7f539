"""impl_mxnet/distributed.py: KVStore dist_sync workers (launched by conformance.train.launch)
against one process, its two faults, its BatchNorm rule, and its bounded join."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.check.compare import REL_TOL
from conformance.interface import Unsupported
from conformance.world import World

from .conftest import backend_or_skip

ROOT = Path(__file__).resolve().parents[1]


def check(variant: str, **kwargs):
    from conformance.check import distributed as d

    mxnet_ = backend_or_skip("mxnet")
    case, _ = d.check_framework("mxnet", mxnet_, variant, d.default_size(variant), 2, 0, **kwargs)
    assert case.error is None, case.error
    return {r.quantity: r.agreement for r in case.rows}


def test_two_workers_equal_one_process_and_each_fault_breaks_it():
    """2 workers x 2 images == 1 process x 4 (googlenet_d2l, 2 steps). dist_sync carries the
    float64 gradients as float32 (measured), hence float32's tolerance, not float64's."""
    good = check("googlenet_d2l")
    assert set(good) == {"loss", "gradients of step 1", "weights after step 2"}
    assert all(a.passed and a.max_rel < 1e-6 for a in good.values()), good
    for fault in ("sum", "same-shard"):
        bad = check("googlenet_d2l", fault=fault)
        assert not bad["gradients of step 1"].passed and bad["gradients of step 1"].max_rel > 1000 * REL_TOL, fault
        assert not bad["weights after step 2"].passed, fault


def test_batchnorm_statistics_are_each_workers_own():
    """googlenet_cifar: batch statistics per replica, running statistics each worker's own,
    against NumPy; the 'mean' rule (a wrong statement of it) fails."""
    own = check("googlenet_cifar")
    assert own and all(a.passed for a in own.values()), own
    mean = check("googlenet_cifar", rule={"batch": "replica", "running": "mean"})
    assert not mean["running statistics of replica 0"].passed
    assert mean["running statistics of replica 0"].max_rel > 1000 * REL_TOL


def test_synchronized_batchnorm_is_unsupported_before_any_work():
    mxnet_ = backend_or_skip("mxnet")
    from impl_mxnet import distributed

    model = mxnet_.build("googlenet_cifar")
    with pytest.raises(Unsupported, match="SyncBatchNorm"):
        distributed.Trainer(model, 0.01, 0.9, world=World(2), synchronized=True)


def test_a_join_nobody_answers_ends_within_the_timeout_with_one_line():
    backend_or_skip("mxnet")
    code = (
        "from impl_mxnet import distributed; from conformance.world import World\n"
        "distributed.start(World(workers=2, timeout=3))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DMLC_ROLE": "worker",
        "DMLC_PS_ROOT_URI": "127.0.0.1",
        "DMLC_PS_ROOT_PORT": "1",  # nobody listens there
        "DMLC_NUM_SERVER": "1",
        "DMLC_NUM_WORKER": "2",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "did not all join within 3 s" in done.stderr.splitlines()[-1]
    assert "terminate called" not in done.stderr  # ps-lite's aborting C++ exit is skipped
    assert time.monotonic() - started < 60
