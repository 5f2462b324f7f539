"""One runtime's process, ``python -m conformance.bench.worker --worker ROLE``: it builds
its model, says it is ready, then answers the parent's one-line commands in JSON on
stdout ("first", "run N", "quit"); everything else it prints goes to stderr (the log)."""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import spec
from ..frameworks import usable_cores
from .kernels import kernel
from .settings import TRAIN_MODES, Settings

WARMUP = 2
ROLES = ("infer", "train", "export", "onnx", "limit")
OPTIONS = ("framework", "mode", "out", "graph")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _input(s: Settings, channels: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((s.batch, channels, s.size, s.size)).astype(np.float32)


def _serve(
    answer: Callable[[dict[str, Any]], None], ready: dict[str, Any], call: Callable[[], object], opened: float = 0.0
) -> None:
    """Say ``ready``, then answer the parent's commands: "first" (its time, plus
    ``opened``: what getting here cost beyond the imports), "run N", "quit"."""
    answer(ready)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "first":
            start = time.perf_counter()
            call()
            seconds = time.perf_counter() - start + opened
            for _ in range(WARMUP):
                call()
            answer({"seconds": seconds})
        elif command == "run":
            times = []
            for _ in range(int(args[0])):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            answer({"seconds": times})
        elif command == "quit":
            answer({"peak_mb": _peak_mb()})
            return


def _backend(name: str) -> Any:
    from ..frameworks import load, threads

    backends, skipped = load([name])
    return backends.get(name), skipped.get(name), threads


def worker(role: str, s: Settings, options: dict[str, str], answer: Callable[[dict[str, Any]], None]) -> None:
    """One runtime's process."""
    p = spec.resolve(s.variant)
    if role in ("infer", "train", "export"):
        backend, why, threads = _backend(options.get("framework", "torch"))
        if backend is None:
            answer({"skipped": why})
            return
        model = backend.build(s.variant)
        images = _input(s, p.in_channels)
        if role == "infer":
            mode = options.get("mode") or backend.MODES[0]
            ready = {"modes": list(backend.MODES), "version": backend.version(), "threads": threads()}
            _serve(answer, ready, lambda: backend.forward(model, images, mode=mode))
        elif role == "train":
            from ..canonical import initial_params

            backend.from_canonical(model, initial_params(p))
            trainer_options = TRAIN_MODES[options["framework"]][options["mode"]]
            trainer = backend.Trainer(model, lr=0.01, momentum=0.9, **trainer_options)
            labels = np.random.default_rng(1).integers(0, p.num_classes, s.batch)
            ready = {"version": backend.version(), "threads": threads()}
            _serve(answer, ready, lambda: trainer.step(images, labels))
        else:
            start = time.perf_counter()
            try:
                graph = backend.to_onnx(model, images.shape, False, False)
            except ImportError as e:
                answer({"skipped": f"cannot export ({e}); install with: pip install -e '.[onnx]'"})
                return
            Path(options["out"]).write_bytes(graph)
            answer({"ready": True})
            sys.stdin.readline()  # quit
            answer({"path": options["out"], "seconds": time.perf_counter() - start, "peak_mb": _peak_mb()})
    elif role == "onnx":
        from ..check.judges import session

        start = time.perf_counter()
        run = session(Path(options["graph"]).read_bytes())
        feed = {run.get_inputs()[0].name: _input(s, p.in_channels)}
        ort = importlib.import_module("onnxruntime")
        ready = {"version": f"onnxruntime {ort.__version__}", "threads": {"onnxruntime": usable_cores()}}
        _serve(answer, ready, lambda: run.run(None, feed), opened=time.perf_counter() - start)
    elif role == "limit":
        flops, call = kernel(s, options["mode"])
        torch = importlib.import_module("torch")
        ready = {"version": f"torch {torch.__version__}", "threads": {"torch": torch.get_num_threads()}}
        _serve(answer, {**ready, "flops": flops}, call)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conformance.bench.worker", description="a benchmark worker")
    parser.add_argument("--worker", required=True, choices=ROLES)
    parser.add_argument("--settings", required=True)
    for key in OPTIONS:
        parser.add_argument(f"--{key}")
    args = parser.parse_args()
    # The protocol has stdout to itself; whatever else prints goes to stderr (the log).
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def answer(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    settings = json.loads(args.settings)
    s = Settings(**{**settings, "frameworks": tuple(settings["frameworks"])})
    options = {k: v for k, v in vars(args).items() if k in OPTIONS and v}
    worker(args.worker, s, options, answer)


if __name__ == "__main__":
    main()
