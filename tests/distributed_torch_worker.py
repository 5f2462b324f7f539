"""One worker of tests/test_distributed_torch.py, started with torchrun's variables:
``python -m tests.distributed_torch_worker JOB.json``. Trains a few steps with
impl_torch.distributed and saves what the test compares in ``<out>.<rank>.npz``.

A stand-in for the lead's ``conformance.train.worker`` until issue 14's launcher lands.
The job: variant, size, dtype, batch (global), steps, seed, lr, momentum, fault,
synchronized, out, timeout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

import impl_torch
from conformance.canonical import random_params
from conformance.interface import Unsupported
from conformance.world import WorldError
from impl_torch import distributed


def batch(job: dict, step: int, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of ``step``: the same in every worker and in the single process."""
    rng = np.random.default_rng([job["seed"], step])
    x = rng.standard_normal((job["batch"], *shape)).astype(job["dtype"])
    return x, rng.integers(0, classes, job["batch"])


def model(job: dict):
    """The variant, without dropout, holding the job's random canonical weights."""
    from conformance.check.harness import without_dropout
    from conformance.spec import resolve, variant

    v = without_dropout(variant(job["variant"]))
    net = impl_torch.build(v, dtype=job["dtype"])
    impl_torch.from_canonical(net, random_params(resolve(v), seed=job["seed"], training=True))
    return net


def main(path: str) -> int:
    job = json.loads(Path(path).read_text())
    try:
        world = distributed.start(distributed.from_env(timeout=job.get("timeout", 60.0)))
    except WorldError as e:
        print(e, file=sys.stderr)
        return 3
    try:
        net = model(job)
        with distributed.scope():
            pass  # torch: the model needs no scope (built above)
        try:
            trainer = distributed.Trainer(
                net,
                lr=job["lr"],
                momentum=job["momentum"],
                record=True,
                world=world,
                fault=job.get("fault"),
                synchronized=job.get("synchronized", False),
            )
        except Unsupported as e:
            np.savez(f"{job['out']}.{world.rank}.npz", unsupported=np.array(str(e)))
            return 0
        found: dict[str, np.ndarray] = {"threads": np.array(distributed.threads())}
        shape = (net.plan.in_channels, job["size"], job["size"])
        for step in range(1, job["steps"] + 1):
            loss, correct = trainer.step(*batch(job, step, shape, net.plan.fc.out_features))
            found[f"loss/{step}"] = np.array(loss)
            found[f"correct/{step}"] = np.array(correct)
            for k, v in trainer.batch_stats(world.rank).items():
                found[f"batch/{step}/{k}"] = v
            for k, v in trainer.running_stats(world.rank).items():
                found[f"running/{step}/{k}"] = v
            if step == 1:
                for k, v in trainer.gradients().items():
                    found[f"grad/{k}"] = v
            if job.get("die_after") == step and world.rank == 1:
                os._exit(9)  # a worker that dies mid-run: no cleanup, no leaving the group
        for k, v in impl_torch.to_canonical(net).items():
            found[f"weight/{k}"] = v
        for k, v in trainer.state().items():
            found[f"state/{k}"] = v
        np.savez(f"{job['out']}.{world.rank}.npz", **found)
        return 0
    except WorldError as e:
        print(e, file=sys.stderr)
        return 4
    finally:
        distributed.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
