"""Keras's data-parallel training (impl_keras.distributed) against one process: the
figures come from ``tests/distributed_keras_run.py``, run once in a fresh process (the
logical CPUs must be split before TensorFlow initialises its devices).

Tolerances: float64 throughout. Two replicas sum two half-batch gradients where one
process sums four rows at once, so the results differ by rounding only: 1e-10 relative
is thousands of float64 ulps of headroom, and 1e-4 (compare.REL_TOL) is what the faults
must exceed by orders of magnitude.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conformance.check.compare import REL_TOL
from conformance.world import FAULTS, World, WorldError

from .conftest import ROOT, backend_or_skip

EXACT = 1e-10  # float64 rounding of a differently ordered sum, with headroom


@pytest.fixture(scope="module")
def figures() -> dict:
    backend_or_skip("keras")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.distributed_keras_run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_engine_sums_gradients_as_stated(figures):
    from impl_keras import distributed

    assert figures["reduce"] == distributed.GRADIENTS["reduce"] == "sum"
    assert figures["threads"] >= 1


def test_two_replicas_equal_one_process_without_batchnorm(figures):
    ok = figures["parity"]["ok"]
    assert ok["loss_abs"] < EXACT, ok
    for quantity in ("gradients", "weights"):
        assert ok[quantity]["abs"] < EXACT and ok[quantity]["rel"] < 1e-6, (quantity, ok)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_break_parity(figures, fault):
    broken = figures["parity"][fault]
    assert broken["gradients"]["rel"] > 100 * REL_TOL and broken["weights"]["abs"] > 1e-4, broken


def test_batchnorm_rule_is_each_replicas_own(figures):
    from impl_keras import distributed

    bn = figures["batchnorm"]
    assert bn["replicas"] == [0, 1]
    for r in bn["replicas"]:
        assert bn[f"batch_stats_{r}"]["abs"] < EXACT, bn  # per-replica batch statistics
    rule = distributed.BATCHNORM["running"]
    assert rule == "own" and distributed.BATCHNORM["batch"] == "replica"
    assert all(e["abs"] < EXACT for e in bn[f"running_{rule}"]), bn
    # negative controls: the other rules are far off for at least one replica
    for wrong in ("rank 0", "mean"):
        assert max(e["rel"] for e in bn[f"running_{wrong}"]) > 100 * REL_TOL, (wrong, bn)
    assert bn["checkpoint_is_replica_0"]["abs"] == 0.0


def test_synchronized_batchnorm_equals_the_global_batch(figures):
    sync = figures["synchronized"]
    assert sync["loss_abs"] < EXACT, sync
    # E[x^2] - E[x]^2 (Keras's all-reduced moments) against two-pass moments: float64 rounding
    for key in ("gradients", "batch_stats_0", "batch_stats_1", "running_0", "running_1"):
        assert sync[key]["abs"] < 1e-9, (key, sync)


def test_start_refuses_too_few_devices_after_tensorflow_initialised():
    """In this pytest process TensorFlow has one logical CPU once any op ran: start must
    say so in one line, not let MirroredStrategy fail later."""
    backend_or_skip("keras")
    import tensorflow as tf

    from impl_keras import distributed

    tf.constant(1.0) + 1.0  # initialise the devices
    many = len(tf.config.list_logical_devices("CPU")) + 1
    with pytest.raises(WorldError, match=f"--workers {many}: TensorFlow initialised its devices"):
        distributed.start(World(many))
    distributed.stop()


def test_trainer_refuses_unknown_fault():
    backend_or_skip("keras")
    from impl_keras import distributed

    distributed.start(World(1))
    try:
        with pytest.raises(ValueError, match="fault: expected None or one of sum, same-shard"):
            distributed.Trainer(None, 0.01, 0.9, world=World(1), fault="typo")  # type: ignore[arg-type]
    finally:
        distributed.stop()
