"""One worker of a data-parallel run: ``python -m conformance.train.worker JOB.json``.

The launcher (``launch.py``) starts it with the engine's variables set; it joins the
engine's group (``impl_<framework>.distributed.start``), says so to the launcher, runs
the job and leaves the group. Two jobs: ``train`` (the ``train`` command's loop, on a
shard of each global batch) and ``steps`` (a few SGD steps from given weights on one
given global batch, every quantity saved for the distributed parity check). A ``steps``
job may name ``"trainer"``, ``"module:callable"``: called with the engine's Trainer class,
it returns the class to step with (the negative controls' broken ports, from tests/).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import files, interrupts, spec
from ..canonical import load
from ..interface import Unsupported
from ..world import World, WorldError
from . import launch


def engine_of(framework: str) -> ModuleType:
    """``impl_<framework>.distributed`` (imports the framework)."""
    return importlib.import_module(f"impl_{framework}.distributed")


def world_from_environment(framework: str, world: World) -> World:
    """The world as the engine's variables describe it (torchrun's RANK, WORLD_SIZE and
    MASTER_*; MXNet's scheduler assigns ranks when the workers join)."""
    env = os.environ
    if framework == "torch" and "RANK" in env:
        return World(
            int(env["WORLD_SIZE"]), int(env["RANK"]), env["MASTER_ADDR"], int(env["MASTER_PORT"]), world.timeout
        )
    if framework == "mxnet" and "DMLC_NUM_WORKER" in env:
        return World(
            int(env["DMLC_NUM_WORKER"]), 0, env["DMLC_PS_ROOT_URI"], int(env["DMLC_PS_ROOT_PORT"]), world.timeout
        )
    return world


def join(framework: str, world: World, job: Mapping[str, Any] | None = None) -> tuple[ModuleType, Any, World]:
    """Import the framework, join its group; (engine, backend, world with the engine's rank)."""
    from .. import frameworks

    backends, skipped = frameworks.load([framework])
    if framework not in backends:
        raise WorldError(f"--framework {framework}: {skipped[framework]}")
    engine = engine_of(framework)
    world = engine.start(world_from_environment(framework, world))
    launch.joined(job or {}, world.rank)
    return engine, backends[framework], world


def steps(engine: ModuleType, backend: Any, world: World, job: Mapping[str, Any]) -> None:
    """``job["steps"]`` SGD steps from the weights in ``job["params"]`` on the global batch
    in ``job["batch"]``; every process saves what its replicas saw to
    ``<job["result"]>-<rank>.npz``: the loss of each step, the gradient of step 1, the
    weights after the last step, and each replica's batch statistics of each step and
    running statistics after it (``batch statistics/step S/<replica>/<key>``)."""
    p = spec.resolve(spec.without_dropout(spec.variant(job["variant"])), **job["options"])
    with np.load(job["batch"], allow_pickle=False) as batch:
        x, y = batch["x"], batch["y"]
    with engine.scope():
        model = backend.build(p.variant, **p.options.asdict(), dtype=str(x.dtype))
    backend.from_canonical(model, load(job["params"], p))
    trainer = trainer_class(engine, job.get("trainer"))(
        model,
        lr=job["lr"],
        momentum=job["momentum"],
        record=True,
        world=world,
        synchronized=job.get("synchronized", False),
    )
    out: dict[str, np.ndarray] = {}
    for step in range(1, job["steps"] + 1):
        out[f"loss/step {step}"] = np.array([trainer.step(x, y)[0]])
        if step == 1:
            out.update({f"gradients/{k}": v for k, v in trainer.gradients().items()})
        for r in trainer.replicas() if p.variant.convs.norm is not None else ():
            out.update({f"batch statistics/step {step}/{r}/{k}": v for k, v in trainer.batch_stats(r).items()})
            out.update({f"running statistics/step {step}/{r}/{k}": v for k, v in trainer.running_stats(r).items()})
    weights = backend.to_canonical(model)
    out.update({f"weights/{k}": v for k, v in weights.items() if not k.endswith(("running_mean", "running_var"))})
    np.savez(f"{job['result']}-{world.rank}.npz", **out)


def trainer_class(engine: ModuleType, wrapper: str | None) -> Any:
    """The engine's Trainer, or what ``wrapper`` (``"module:callable"``, imported only when
    named) makes of it."""
    if wrapper is None:
        return engine.Trainer
    module, _, name = wrapper.partition(":")
    if not module or not name:
        raise ValueError(f"trainer: expected 'module:callable', got {wrapper!r}")
    return getattr(importlib.import_module(module), name)(engine.Trainer)


def bench(engine: ModuleType, backend: Any, world: World, job: Mapping[str, Any]) -> None:
    """Training images/s of the engine: ``job["steps"]`` timed SGD steps on one seeded
    global batch, after a first (timed apart) and a warm-up step; worker 0 writes the
    figures as JSON to ``job["result"]``."""
    import resource
    import statistics
    import time

    from .settings import Settings, plan_of

    p = plan_of(Settings(job["variant"]))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((job["batch"], p.in_channels, job["size"], job["size"])).astype(np.float32)
    y = rng.integers(0, p.num_classes, job["batch"])
    with engine.scope():
        model = backend.build(p.variant, **p.options.asdict())
    trainer = engine.Trainer(model, lr=0.01, momentum=0.9, world=world)
    start = time.perf_counter()
    trainer.step(x, y)
    first = time.perf_counter() - start
    trainer.step(x, y)
    seconds = []
    for _ in range(job["steps"]):
        start = time.perf_counter()
        trainer.step(x, y)
        seconds.append(time.perf_counter() - start)
    if world.rank == 0:
        figures = {
            "images_per_s": job["batch"] / statistics.median(seconds),
            "first_s": first,
            "threads": engine.threads(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        Path(job["result"]).write_text(json.dumps(figures))


def train_job(engine: ModuleType, backend: Any, world: World, job: Mapping[str, Any]) -> int:
    from . import loop
    from .dataset import load_data
    from .settings import Settings

    settings = Settings(**job["settings"])
    splits = load_data(job["data"], settings)
    try:
        loop.train(
            backend,
            settings,
            splits,
            Path(job["out"]),
            job["force"],
            resume=job["resume"],
            world=world,
            engine=engine,
            log=lambda line: print(line, flush=True),
        )
    except loop.TrainingError as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    framework, world = job["framework"], World(**job["world"])
    if job["kind"] == "train":
        from .loop import reproducible

        reproducible(framework)
    engine, code = None, 1
    try:
        with files.signals():
            engine, backend, world = join(framework, world, job)
            if job["kind"] in {"steps", "bench"}:
                (steps if job["kind"] == "steps" else bench)(engine, backend, world, job)
                code = 0
            else:
                code = train_job(engine, backend, world, job)
    except interrupts.Interrupted as e:
        print(f"interrupted by {e.name}: {e.detail or 'nothing was written'}", file=sys.stderr, flush=True)
        code = e.exit_code
    except Unsupported as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = launch.UNSUPPORTED
    except WorldError as e:
        print(f"error: {e}" + (f"; {e.detail}" if e.detail else ""), file=sys.stderr, flush=True)
        code = 3
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if engine is not None:
            try:
                engine.stop(failed=code != 0)  # a failed worker does not wait for its peers to leave
            except WorldError as e:  # a peer lost after the last step
                print(f"error: {e}", file=sys.stderr, flush=True)
                code = 3
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
