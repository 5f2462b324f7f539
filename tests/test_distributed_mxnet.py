"""impl_mxnet/distributed.py beyond the parity every engine passes (tests/test_distributed.py):
synchronised BatchNorm refused before any work, and a join nobody answers ending in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.interface import Unsupported
from conformance.world import World

from .conftest import backend_or_skip

ROOT = Path(__file__).resolve().parents[1]


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
