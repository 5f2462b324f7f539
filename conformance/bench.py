"""``python -m conformance bench``: how fast each framework runs GoogLeNet, side by side.

Inference images/s of every framework in every mode (its default first) and of ONNX
Runtime on PyTorch's ONNX export, for one variant, batch and input size; with
``--train`` also training images/s (each framework's ``Trainer``, one SGD step per
call). Beside each: its ratio to the fastest, its first call (tracing, compiling,
exporting), the peak resident memory of its process, and, as the machine's limit,
the best throughput a single convolution reaches in PyTorch here, turned into images/s
with the spec's multiply-adds.

Method: each runtime runs in its own process (so no framework changes another's
threads or memory); the model holds the suite's initial weights (``build``); after
the first call and two warm-up calls the parent asks each process in turn for
``calls`` timed calls, for ``rounds`` rounds, alternating the order, so a change of
load on the machine falls on all of them; images/s is the batch over the best call,
with the median beside it. The load average is printed before and after.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import spec
from .files import atomic_write
from .frameworks import FRAMEWORKS, usable_cores
from .interface import EAGER, MODE_SETS
from .progress import Steps

ONNX = "onnx"  # ONNX Runtime on PyTorch's export: the runtime the others are measured against
WARMUP = 2


@dataclass(frozen=True)
class Settings:
    variant: str = "googlenet_bn"
    batch: int = 8
    size: int = 224
    frameworks: tuple[str, ...] = (*FRAMEWORKS, ONNX)
    train: bool = False
    rounds: int = 5
    calls: int = 2  # timed calls per round
    modes: str = "all"  # "default": each framework's default and eager, not the compiled extras


@dataclass
class Runtime:
    """One row: a framework in one mode (``kind`` "infer" or "train"), ONNX Runtime, or a
    framework that could not run here (``skipped``)."""

    framework: str
    mode: str
    kind: str = "infer"
    default: bool = False
    version: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    first_s: float | None = None
    seconds: list[float] = field(default_factory=list)  # every timed call
    flops: float = 0.0  # a limit kernel's floating-point operations per call
    peak_mb: float | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "limit":
            return f"limit: {self.mode}"
        if self.framework == ONNX:
            return "onnxruntime (torch's ONNX export)"
        return f"{self.framework} {self.mode}" + (" (default)" if self.default else "")

    def images_per_s(self, batch: int) -> float:
        return batch / min(self.seconds) if self.seconds else 0.0

    def median_images_per_s(self, batch: int) -> float:
        return batch / statistics.median(self.seconds) if self.seconds else 0.0


@dataclass
class Limit:
    gflops: float  # the best kernel measured, GFLOP/s
    kernel: str
    gflop_per_image: float  # 2 x the spec's multiply-adds

    @property
    def images_per_s(self) -> float:
        return self.gflops / self.gflop_per_image


# The machine's limit: single kernels in PyTorch, timed in the rounds like the runtimes.
# Each framework's Trainer as ``train`` runs it, and for Gluon also its imperative step
# (the Trainer hybridizes by default): the ratio says what hybridizing gains.
TRAIN_MODES: dict[str, dict[str, dict[str, Any]]] = {
    "torch": {"train": {}},
    "keras": {"train": {}},
    "mxnet": {"train": {}, "train imperative": {"hybridize": False}},
}


def _train_options(options: dict[str, str]) -> dict[str, Any]:
    """The Trainer keyword arguments of a train worker's mode."""
    return TRAIN_MODES[options["framework"]][options["mode"]]


KERNELS = {
    "conv": "a 3x3 conv, 128 -> 192 channels at 28 x 28 (inception3b's 3x3 branch at 224), channels-last",
    "gemm": "a 2048 x 2048 x 2048 matrix product",
}


@dataclass
class Bench:
    settings: Settings
    cores: int
    load: tuple[float, float]  # 1-minute load average before and after
    runtimes: list[Runtime]
    limit: Limit | None
    seconds: float


def check_settings(s: Settings) -> None:
    """Refuse bad options, naming them, before any framework is imported."""
    if s.variant not in spec.VARIANTS:
        raise ValueError(f"--variant: unknown {s.variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    for option, value in (("--batch", s.batch), ("--input-size", s.size), ("--rounds", s.rounds)):
        if value < 1:
            raise ValueError(f"{option}: expected a positive integer, got {value}")
    try:
        spec.stage_shapes(spec.resolve(s.variant), s.size)
    except spec.SpecError as e:
        raise spec.SpecError(f"--input-size {s.size}: {s.variant} cannot run it: {e}") from None
    if s.modes not in MODE_SETS:
        raise ValueError(f"--modes: expected one of {', '.join(MODE_SETS)}, got {s.modes!r}")
    unknown = [n for n in s.frameworks if n not in FRAMEWORKS and n != ONNX]
    if unknown or not s.frameworks:
        raise ValueError(
            f"--frameworks: unknown {unknown or list(s.frameworks)!r}; expected a comma-separated subset of "
            f"{','.join([*FRAMEWORKS, ONNX])}"
        )


# --------------------------------------------------------------------------------------
# The parent: start the workers, interleave their rounds, collect the figures.
# --------------------------------------------------------------------------------------


class Worker:
    """A runtime in its own process, driven by one-line commands; it answers in JSON."""

    def __init__(self, role: str, s: Settings, log: IO[str], **extra: str) -> None:
        args = [sys.executable, "-m", "conformance.bench", "--worker", role, "--settings", json.dumps(_asdict(s))]
        for key, value in extra.items():
            args += [f"--{key}", value]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=os.getcwd()
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(f"the worker exited ({self.process.returncode}) instead of answering {command!r}")
        return json.loads(line)

    def close(self) -> dict[str, Any]:
        answer = self.ask("quit")
        self.process.wait(timeout=60)
        return answer


def _asdict(s: Settings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def run(s: Settings, progress: Steps | None = None) -> Bench:
    """The benchmark, with ``progress`` told what runs now."""
    check_settings(s)
    progress = Steps.silent() if progress is None else progress
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[Runtime] = []
    workers: list[tuple[Runtime, Worker]] = []
    with tempfile.TemporaryDirectory(prefix="conformance-bench-") as tmp, open(Path(tmp) / "log", "w+") as log:
        try:
            progress("starting one process per runtime")
            _start(s, log, Path(tmp), rows, workers)
            progress.total(1 + len(workers) * (1 + s.rounds))
            for i, (row, worker) in enumerate(workers):
                progress(f"first call {i + 1}/{len(workers)}: {row.label}")
                answer = worker.ask("first")
                row.first_s = (row.first_s or 0.0) + answer["seconds"]
            for r in range(s.rounds):
                order = workers if r % 2 == 0 else workers[::-1]
                for row, worker in order:
                    progress(f"round {r + 1}/{s.rounds}: {row.label}")
                    row.seconds += worker.ask(f"run {s.calls}")["seconds"]
            for row, worker in workers:
                row.peak_mb = worker.close()["peak_mb"]
        except (RuntimeError, json.JSONDecodeError) as e:
            log.seek(0)
            raise RuntimeError(f"bench: {e}\n{log.read()[-3000:]}") from None
        finally:
            for _, worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()
    return Bench(
        s, usable_cores(), (load_before, os.getloadavg()[0]), rows, _limit(s, rows), time.perf_counter() - start
    )


def _start(s: Settings, log: IO[str], tmp: Path, rows: list[Runtime], workers: list[tuple[Runtime, Worker]]) -> None:
    """A process per framework's default mode (which says what other modes it has), then
    one per other mode, the export and ONNX Runtime, and with --train one per trainer."""
    firsts = {fw: Worker("infer", s, log, framework=fw) for fw in s.frameworks if fw in FRAMEWORKS}
    export = Worker("export", s, log, out=str(tmp / "model.onnx")) if ONNX in s.frameworks else None
    trained = [(fw, mode) for fw in firsts for mode in TRAIN_MODES[fw]] if s.train else []
    trainers = {(fw, mode): Worker("train", s, log, framework=fw, mode=mode) for fw, mode in trained}
    for fw, worker in firsts.items():
        ready = worker.ask("")
        if "skipped" in ready:
            rows.append(Runtime(fw, "-", skipped=ready["skipped"]))
            worker.close()
            continue
        modes = ready["modes"]
        rows.append(Runtime(fw, modes[0], default=True, version=ready["version"], threads=ready["threads"]))
        workers.append((rows[-1], worker))
        for mode in modes[1:] if s.modes == "all" else [m for m in modes[1:] if m == EAGER]:
            other = Worker("infer", s, log, framework=fw, mode=mode)
            answer = other.ask("")
            rows.append(Runtime(fw, mode, version=answer["version"], threads=answer["threads"]))
            workers.append((rows[-1], other))
    if export is not None:
        ready = export.ask("")
        if "skipped" in ready:
            rows.append(Runtime(ONNX, "-", skipped=ready["skipped"]))
            export.close()
        else:
            exported = export.close()
            worker = Worker("onnx", s, log, graph=exported["path"])
            answer = worker.ask("")
            rows.append(Runtime(ONNX, "onnxruntime", version=answer["version"], threads=answer["threads"]))
            rows[-1].first_s = exported["seconds"]  # the export is part of getting a first answer
            workers.append((rows[-1], worker))
    for (fw, mode), worker in trainers.items():
        ready = worker.ask("")
        if "skipped" in ready:
            worker.close()
            continue
        rows.append(Runtime(fw, mode, kind="train", version=ready["version"], threads=ready["threads"]))
        workers.append((rows[-1], worker))
    for kernel in KERNELS if "torch" in s.frameworks else ():
        worker = Worker("limit", s, log, mode=kernel)
        ready = worker.ask("")
        if "skipped" in ready:
            worker.close()
            continue
        rows.append(Runtime("torch", kernel, kind="limit", version=ready["version"], threads=ready["threads"]))
        rows[-1].flops = ready["flops"]
        workers.append((rows[-1], worker))


def _limit(s: Settings, rows: list[Runtime]) -> Limit | None:
    """The best GFLOP/s a single kernel reached in the rounds."""
    measured = {r.mode: r.flops / min(r.seconds) / 1e9 for r in rows if r.kind == "limit" and r.seconds}
    if not measured:
        return None
    kernel = max(measured, key=lambda k: measured[k])
    return Limit(measured[kernel], KERNELS[kernel], gflop_per_image(s))


def gflop_per_image(s: Settings) -> float:
    """2 x the spec's multiply-adds for one image of the benchmarked model (no aux heads)."""
    return 2 * sum(r.macs for r in spec.layer_counts(spec.resolve(s.variant), s.size)) / 1e9


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def ratios(b: Bench) -> dict[str, Any]:
    """Measured in this run: the fastest framework's default mode and the slowest's
    against ONNX Runtime, and each default against its framework's best mode."""
    batch = b.settings.batch
    infer = [r for r in b.runtimes if r.kind == "infer" and r.seconds]
    onnx = next((r.images_per_s(batch) for r in infer if r.framework == ONNX), None)
    defaults = {r.framework: r.images_per_s(batch) for r in infer if r.default}
    best = {fw: max(r.images_per_s(batch) for r in infer if r.framework == fw) for fw in defaults}
    found: dict[str, Any] = {"default vs best mode": {fw: defaults[fw] / best[fw] for fw in defaults}}
    if onnx and defaults:
        found["fastest default vs onnxruntime"] = max(defaults.values()) / onnx
        found["slowest default vs onnxruntime"] = min(defaults.values()) / onnx
    return found


def render(b: Bench) -> str:
    s, batch = b.settings, b.settings.batch
    p = spec.resolve(s.variant)
    lines = [
        f"GoogLeNet benchmark: {s.variant}, batch {batch}, {p.in_channels} x {s.size} x {s.size}, float32, "
        f"{b.cores} cores; best of {s.rounds} rounds x {s.calls} calls (median beside it)",
        f"  load average (1 min): {b.load[0]:.2f} before, {b.load[1]:.2f} after (other work on the cores slows all)",
    ]
    for kind, title in (("infer", "inference"), ("train", "training (one SGD step per call)")):
        rows = [r for r in b.runtimes if r.kind == kind and r.seconds]
        if not rows:
            continue
        fastest = max(r.images_per_s(batch) for r in rows)
        lines += [
            "",
            f"  {title:<36} {'images/s':>9} {'median':>8} {'x fastest':>10} {'first call':>11} {'peak RSS':>9}",
        ]
        for r in sorted(rows, key=lambda r: -r.images_per_s(batch)):
            first = "-" if r.first_s is None else f"{r.first_s:.1f} s"
            lines.append(
                f"  {r.label:<36} {r.images_per_s(batch):9.1f} {r.median_images_per_s(batch):8.1f} "
                f"{r.images_per_s(batch) / fastest:10.2f} {first:>11} {r.peak_mb or 0:6.0f} MB"
            )
    lines += [f"  skipped {r.framework}: {r.skipped}" for r in b.runtimes if r.skipped]
    if b.limit is not None:
        lines += [
            "",
            f"  limit: {b.limit.images_per_s:.0f} images/s, at the {b.limit.gflops:.0f} GFLOP/s of the fastest "
            f"kernel measured in the rounds ({b.limit.kernel}, torch) for {b.limit.gflop_per_image:.2f} GFLOP "
            "per image (2 x the spec's multiply-adds)",
        ]
    measured = [r for r in b.runtimes if r.seconds]
    versions = {r.version for r in measured if r.version}
    threads = {k: v for r in measured for k, v in r.threads.items()}
    lines.append(f"  versions: {'; '.join(sorted(versions))}")
    if threads:
        zero = " (tensorflow 0: one per core)" if any(k.startswith("tensorflow") for k in threads) else ""
        lines.append("  threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()) + zero)
    found = ratios(b)
    if "fastest default vs onnxruntime" in found:
        fastest, slowest = found["fastest default vs onnxruntime"], found["slowest default vs onnxruntime"]
        lines += ["", f"  default mode / onnxruntime: fastest framework {fastest:.2f}, slowest {slowest:.2f}"]
    per = found["default vs best mode"]
    if per:
        lines.append(
            "  each default / its framework's best mode: " + ", ".join(f"{fw} {v:.2f}" for fw, v in per.items())
        )
    lines.append(f"  benchmark took {b.seconds:.0f} s")
    return "\n".join(lines)


def to_json(b: Bench) -> dict[str, Any]:
    batch = b.settings.batch
    doc: dict[str, Any] = {
        "settings": _asdict(b.settings),
        "cores": b.cores,
        "load_average": {"before": b.load[0], "after": b.load[1]},
        "seconds": b.seconds,
        "runtimes": [
            {
                **dataclasses.asdict(r),
                "label": r.label,
                "images_per_s": r.images_per_s(batch),
                "median_images_per_s": r.median_images_per_s(batch),
            }
            for r in b.runtimes
        ],
        "limit": None if b.limit is None else {**dataclasses.asdict(b.limit), "images_per_s": b.limit.images_per_s},
        "ratios": ratios(b),
    }
    return doc


def write_json(b: Bench, path: str | Path, overwrite: bool = False) -> Path:
    return atomic_write(path, json.dumps(to_json(b), indent=1).encode(), overwrite=overwrite)


# --------------------------------------------------------------------------------------
# The workers: ``python -m conformance.bench --worker ROLE``
# --------------------------------------------------------------------------------------


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
    from .frameworks import load, threads

    backends, skipped = load([name])
    return backends.get(name), skipped.get(name), threads


def worker(role: str, s: Settings, options: dict[str, str], answer: Callable[[dict[str, Any]], None]) -> None:
    """One runtime's process."""
    p = spec.resolve(s.variant)
    if role in ("infer", "train", "export"):
        b, why, threads = _backend(options.get("framework", "torch"))
        if b is None:
            answer({"skipped": why})
            return
        model = b.build(s.variant)
        x = _input(s, p.in_channels)
        if role == "infer":
            mode = options.get("mode") or b.MODES[0]
            ready = {"modes": list(b.MODES), "version": b.version(), "threads": threads()}
            _serve(answer, ready, lambda: b.forward(model, x, mode=mode))
        elif role == "train":
            from .canonical import initial_params

            b.from_canonical(model, initial_params(p))
            trainer = b.Trainer(model, lr=0.01, momentum=0.9, **_train_options(options))
            y = np.random.default_rng(1).integers(0, p.num_classes, s.batch)
            ready = {"version": b.version(), "threads": threads()}
            _serve(answer, ready, lambda: trainer.step(x, y))
        else:
            start = time.perf_counter()
            try:
                graph = b.to_onnx(model, x.shape, False, False)
            except ImportError as e:
                answer({"skipped": f"cannot export ({e}); install with: pip install -e '.[onnx]'"})
                return
            Path(options["out"]).write_bytes(graph)
            answer({"ready": True})
            sys.stdin.readline()  # quit
            answer({"path": options["out"], "seconds": time.perf_counter() - start, "peak_mb": _peak_mb()})
    elif role == "onnx":
        from .check.judges import session

        start = time.perf_counter()
        run = session(Path(options["graph"]).read_bytes())
        feed = {run.get_inputs()[0].name: _input(s, p.in_channels)}
        ort = importlib.import_module("onnxruntime")
        ready = {"version": f"onnxruntime {ort.__version__}", "threads": {"onnxruntime": usable_cores()}}
        _serve(answer, ready, lambda: run.run(None, feed), opened=time.perf_counter() - start)
    elif role == "limit":
        flops, call = _kernel(s, options["mode"])
        torch = importlib.import_module("torch")
        ready = {"version": f"torch {torch.__version__}", "threads": {"torch": torch.get_num_threads()}}
        _serve(answer, {**ready, "flops": flops}, call)


def _kernel(s: Settings, kernel: str) -> tuple[float, Callable[[], object]]:
    """(floating-point operations, a call) of one of the :data:`KERNELS`, in PyTorch on
    every core under inference mode: a bound on what any runtime reaches here."""
    import torch

    torch.set_grad_enabled(False)
    if kernel == "conv":
        a = torch.randn(s.batch, 128, 28, 28).contiguous(memory_format=torch.channels_last)
        w = torch.randn(192, 128, 3, 3).contiguous(memory_format=torch.channels_last)
        return 2.0 * s.batch * 28 * 28 * 192 * 128 * 9, lambda: torch.nn.functional.conv2d(a, w, padding=1)
    m = torch.randn(2048, 2048)
    return 2.0 * 2048**3, lambda: m @ m


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conformance.bench", description="a benchmark worker")
    parser.add_argument("--worker", required=True, choices=["infer", "train", "export", "onnx", "limit"])
    parser.add_argument("--settings", required=True)
    for key in ("framework", "mode", "out", "graph"):
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
    options = {k: v for k, v in vars(args).items() if k in ("framework", "mode", "out", "graph") and v}
    worker(args.worker, s, options, answer)


if __name__ == "__main__":
    _main()


# -- data-parallel training: bench --train --workers 1,2 -----------------------------------


@dataclass
class Scaling:
    """Training images/s of one framework's engine with ``workers`` local workers."""

    framework: str
    workers: int
    images_per_s: float = 0.0
    first_s: float = 0.0
    threads: int = 0  # intra-op threads of each worker
    peak_mb: float = 0.0  # worker 0's
    efficiency: float | None = None  # images/s over (workers x the one-worker run's)
    failed: str | None = None


def scaling(s: Settings, workers: list[int], steps: int = 3, progress: Steps | None = None) -> list[Scaling]:
    """Each framework's engine with each number of workers, one run at a time (each in its
    own processes): the global batch stays ``s.batch``, so more workers split it."""
    from .train import launch
    from .world import World

    progress = Steps.silent() if progress is None else progress
    progress.total(len([f for f in s.frameworks if f in FRAMEWORKS]) * len(workers))
    rows = []
    for fw in (f for f in s.frameworks if f in FRAMEWORKS):
        for n in workers:
            progress(f"{fw}: {n} worker{'s' if n > 1 else ''} ...")
            row = Scaling(fw, n)
            with tempfile.TemporaryDirectory(prefix="conformance-bench-") as tmp:
                result = Path(tmp, "result.json")
                job = {"kind": "bench", "variant": s.variant, "batch": s.batch, "size": s.size, "steps": steps}
                outcome = launch.run(fw, World(n), {**job, "result": str(result)}, io.StringIO(), io.StringIO())
                if outcome.code:
                    row.failed = outcome.failed
                else:
                    vars(row).update(json.loads(result.read_text()))
            rows.append(row)
        one = next((r for r in rows if r.framework == fw and r.workers == 1 and not r.failed), None)
        for r in rows:
            if one and r.framework == fw and not r.failed:
                r.efficiency = r.images_per_s / (r.workers * one.images_per_s)
    return rows


def render_scaling(s: Settings, rows: list[Scaling]) -> str:
    lines = [
        f"data-parallel training of {s.variant}, global batch {s.batch} at {s.size} x {s.size}, "
        f"{usable_cores()} cores (each framework's own engine, each run in its own processes):",
        f"  {'framework':<10} {'workers':>7} {'images/s':>9} {'speedup':>7} {'efficiency':>10} "
        f"{'threads/worker':>14} {'first step':>10} {'peak MB':>8}",
    ]
    for r in rows:
        if r.failed:
            lines.append(f"  {r.framework:<10} {r.workers:>7}  FAILED: {r.failed}")
            continue
        eff = f"{r.efficiency:.2f}" if r.efficiency is not None else "-"
        speedup = f"{r.efficiency * r.workers:.2f}" if r.efficiency is not None else "-"
        lines.append(
            f"  {r.framework:<10} {r.workers:>7} {r.images_per_s:>9.1f} {speedup:>7} {eff:>10} {r.threads:>14} "
            f"{r.first_s:>9.1f}s {r.peak_mb:>8.0f}"
        )
    lines.append(
        "  speedup: images/s over the one-worker run's; efficiency: speedup / workers. Local workers share "
        f"this machine's {usable_cores()} cores, which one worker already uses, so a speedup above 1 needs "
        "cores the single worker leaves idle."
    )
    return "\n".join(lines)
