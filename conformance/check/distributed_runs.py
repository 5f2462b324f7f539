"""The runs ``check --distributed`` compares: the same SGD steps in one process and in a
framework's engine with N workers, from the same canonical weights and seeded batch,
each returning the quantities a worker saves (``train.worker``)."""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np

from .. import spec
from ..canonical import save
from ..interface import Backend, Unsupported
from ..train import launch
from ..world import World
from .inputs import full_options, seeded_input
from .training import TRAIN_LR, TRAIN_MOMENTUM


def plan(variant: str) -> spec.Plan:
    v = spec.without_dropout(spec.variant(variant))
    return spec.resolve(v, **full_options(spec.VARIANTS[variant]))


def batch(p: spec.Plan, size: int, n: int, seed: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    x = seeded_input(p, size, n, seed).astype(dtype)
    y = np.random.default_rng([seed, size, 1]).integers(0, p.num_classes, n)
    return x, y


def single(
    backend: Backend, p: spec.Plan, params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, steps: int
) -> dict[str, np.ndarray]:
    """What one process computes: the same quantities as a worker saves (``worker.steps``)."""
    model = backend.build(p.variant, **p.options.asdict(), dtype=str(x.dtype))
    backend.from_canonical(model, params)
    trainer = backend.Trainer(model, lr=TRAIN_LR, momentum=TRAIN_MOMENTUM, record=True)
    out: dict[str, np.ndarray] = {}
    for step in range(1, steps + 1):
        out[f"loss/step {step}"] = np.array([trainer.step(x, y)[0]])
        if step == 1:
            out.update({f"gradients/{k}": v for k, v in trainer.gradients().items()})
            if p.variant.convs.norm is not None:
                out.update({f"batch statistics/{k}": v for k, v in trainer.batch_stats().items()})
                stats = backend.to_canonical(model)
                out.update({f"running statistics/{k}": v for k, v in stats.items() if "running_" in k})
    weights = backend.to_canonical(model)
    out.update({f"weights/{k}": v for k, v in weights.items() if "running_" not in k})
    return out


def distributed(
    framework: str,
    p: spec.Plan,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    workers: int,
    trainer: str | None = None,
    synchronized: bool = False,
    stop: threading.Event | None = None,
) -> list[dict[str, np.ndarray]]:
    """What the engine's workers compute (each process's saved quantities, by rank).
    ``trainer``: ``"module:callable"`` making the class the workers step with from the
    engine's Trainer (``train.worker.trainer_class``; a negative control's broken port).
    ``stop``: ends the workers (``launch.run``), for a run in a thread."""
    with tempfile.TemporaryDirectory(prefix="conformance-distributed-") as tmp:
        save(params, Path(tmp, "params.safetensors"), p)
        np.savez(Path(tmp, "batch.npz"), x=x, y=y)
        job = {
            "kind": "steps",
            "variant": p.variant.name,
            "options": p.options.asdict(),
            "params": str(Path(tmp, "params.safetensors")),
            "batch": str(Path(tmp, "batch.npz")),
            "result": str(Path(tmp, "result")),
            "steps": steps,
            "lr": TRAIN_LR,
            "momentum": TRAIN_MOMENTUM,
            "trainer": trainer,
            "synchronized": synchronized,
        }
        outcome = launch.run(framework, World(workers), job, io.StringIO(), io.StringIO(), stop)
        if outcome.code == launch.UNSUPPORTED:
            raise Unsupported(outcome.said.removeprefix("error: "))
        if outcome.code:
            raise RuntimeError(outcome.failed)
        results = []
        for path in sorted(Path(tmp).glob("result-*.npz"), key=lambda q: int(q.stem.split("-")[1])):
            with np.load(path, allow_pickle=False) as f:
                results.append({k: f[k] for k in f.files})
        return results


class Engines:
    """Engine runs started ahead, ``at_once`` at a time, each in a thread that waits on its
    own processes, while this process computes the single-process runs they are checked
    against. Leaving the ``with`` block (on a signal, say) ends the processes of every run
    still going, and starts none of those queued."""

    def __init__(self, at_once: int) -> None:
        self._pool = ThreadPoolExecutor(at_once, thread_name_prefix="engine")
        self._stop = threading.Event()
        self._started: dict[Hashable, Future[list[dict[str, np.ndarray]]]] = {}

    def start(self, key: Hashable, engine_run: Callable[[threading.Event], list[dict[str, np.ndarray]]]) -> None:
        """Queue ``engine_run`` (called with the event that ends its processes) under ``key``."""
        if key in self._started:
            raise ValueError(f"engine run {key!r} started twice: its results would be another case's")
        self._started[key] = self._pool.submit(engine_run, self._stop)

    def results(self, key: Hashable) -> list[dict[str, np.ndarray]] | None:
        """The run's results (its exception raised here), or None if it was not started."""
        future = self._started.pop(key, None)
        return None if future is None else future.result()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()  # a run still going is nobody's now (its case failed first, or a signal came)
        self._pool.shutdown(wait=True, cancel_futures=True)
