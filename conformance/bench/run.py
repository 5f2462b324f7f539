"""The parent of a benchmark: one process per runtime, their rounds interleaved.

Inference images/s of every framework in every mode (its default first) and of ONNX
Runtime on PyTorch's ONNX export, for one variant, batch and input size; with
``--train`` also training images/s (each framework's ``Trainer``, one SGD step per
call); and the machine's limit (:mod:`.kernels`).

Method: each runtime runs in its own process (:mod:`.worker`, so no framework changes
another's threads or memory); the model holds the suite's initial weights (``build``);
after the first call and two warm-up calls the parent asks each process in turn for
``calls`` timed calls, for ``rounds`` rounds, alternating the order, so a change of
load on the machine falls on all of them; images/s is the batch over the best call,
with the median beside it. The load average is taken before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..frameworks import FRAMEWORKS, usable_cores
from ..interface import EAGER
from ..progress import Steps
from .kernels import KERNELS, limit
from .results import Bench, Runtime
from .settings import ONNX, TRAIN_MODES, Settings, check_settings


class Worker:
    """A runtime in its own process, driven by one-line commands; it answers in JSON."""

    def __init__(
        self, role: str, s: Settings, log: IO[str], env: Mapping[str, str] | None = None, **extra: str
    ) -> None:
        """``env``: variables added to this process's environment for the worker."""
        settings = json.dumps(dataclasses.asdict(s))
        args = [sys.executable, "-m", "conformance.bench.worker", "--worker", role, "--settings", settings]
        for key, value in extra.items():
            args += [f"--{key}", value]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=os.getcwd(),
            env=None if env is None else {**os.environ, **env},
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
    load = (load_before, os.getloadavg()[0])
    return Bench(s, usable_cores(), load, rows, limit(s, rows), time.perf_counter() - start)


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
    for name in KERNELS if "torch" in s.frameworks else ():
        worker = Worker("limit", s, log, mode=name)
        ready = worker.ask("")
        if "skipped" in ready:
            worker.close()
            continue
        rows.append(Runtime("torch", name, kind="limit", version=ready["version"], threads=ready["threads"]))
        rows[-1].flops = ready["flops"]
        workers.append((rows[-1], worker))
