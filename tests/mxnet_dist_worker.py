"""One MXNet dist_sync worker of tests/test_distributed_mxnet.py: ``python -m
tests.mxnet_dist_worker JOB.json`` (DMLC_* set by the test's launcher). It trains a few
steps on a seeded global batch and writes what the test compares to ``job["out"]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from conformance import spec
from conformance.canonical import random_params
from conformance.world import World


def data(job: dict) -> tuple[np.ndarray, np.ndarray]:
    """The global batch every worker (and the single-process reference) trains on."""
    p = spec.resolve(job["variant"])
    rng = np.random.default_rng(job["seed"])
    x = rng.standard_normal((job["batch"], p.in_channels, job["size"], job["size"])).astype(job["dtype"])
    return x, rng.integers(0, p.num_classes, job["batch"])


def main(path: str) -> None:
    import impl_mxnet
    from impl_mxnet import distributed

    job = json.loads(Path(path).read_text())
    world = distributed.start(World(workers=job["workers"], timeout=job.get("timeout", 60.0)))
    try:
        model = impl_mxnet.build(job["variant"], dtype=job["dtype"])
        impl_mxnet.from_canonical(model, random_params(model.plan, job["seed"], training=True))
        trainer = distributed.Trainer(
            model, job["lr"], job["momentum"], record=job["record"], world=world, fault=job.get("fault")
        )
        x, y = data(job)
        out: dict[str, np.ndarray] = {"rank": np.array(world.rank), "threads": np.array(distributed.threads())}
        for step in range(1, job["steps"] + 1):
            loss, correct = trainer.step(x, y)
            out[f"loss/{step}"], out[f"correct/{step}"] = np.array(loss), np.array(correct)
            if step == 1:
                out.update({f"grad/{k}": v for k, v in trainer.gradients().items()})
                out.update({f"run1/{k}": v for k, v in trainer.running_stats(world.rank).items()})
                if job["record"]:
                    out.update({f"bs/{k}": v for k, v in trainer.batch_stats(world.rank).items()})
        out.update({f"w/{k}": v for k, v in impl_mxnet.to_canonical(model).items()})
        out.update({f"state/{k}": v for k, v in trainer.state().items()})
        np.savez(job["out"].format(rank=world.rank), **out)
    except BaseException:
        distributed.stop(failed=True)
        raise
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1])
