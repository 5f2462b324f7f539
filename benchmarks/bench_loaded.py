"""Training images/s when another job takes a core: PyTorch's OpenMP threads against a
busy core, with the settings that could hold it up, side by side.

Issue #22: a newcomer's ``train --framework torch --variant googlenet_d2l`` ran at 10-14
images/s while another job used one core. Each setting below runs ``bench``'s own
training worker (``python -m conformance.bench --worker train``: the framework's
``Trainer``, one SGD step per call) in a fresh process with its environment, in
alternating rounds; ``--busy N`` starts N processes that spin on a core each for the
whole run (the other job), ``--busy 0`` measures without them. The load average and
``uptime`` are printed before and after: other work on the machine counts too.

    python benchmarks/bench_loaded.py            # beside whatever else runs here
    python benchmarks/bench_loaded.py --busy 0 --framework keras
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> environment added to the worker's (the suite's own default is what it does
# with none: conformance.frameworks.yield_idle_threads).
SETTINGS: dict[str, dict[str, str]] = {
    "suite default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "every core (2 threads)": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)},
    "one thread": {"OMP_NUM_THREADS": "1"},
}


def _uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def _spin() -> None:
    while True:
        pass


class Worker:
    def __init__(self, framework: str, settings: dict[str, object], env: dict[str, str]) -> None:
        args = [sys.executable, "-m", "conformance.bench", "--worker", "train", "--settings", json.dumps(settings)]
        args += ["--framework", framework, "--mode", "train"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env},
        )
        self.ready = self.ask("")

    def ask(self, command: str) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited ({self.process.wait()}) instead of answering {command!r}")
        return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--variant", default="googlenet_d2l")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core each (the other job)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of: {', '.join(SETTINGS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SETTINGS]
    if unknown or not chosen:
        parser.error(f"--settings: unknown {unknown}; expected a comma-separated subset of {', '.join(SETTINGS)}")
    settings = {
        "variant": args.variant,
        "batch": args.batch,
        "size": args.input_size,
        "frameworks": [args.framework],
        "train": True,
        "rounds": args.rounds,
        "calls": args.calls,
    }
    print(f"uptime before: {_uptime()}")
    print(
        f"{args.framework} training of {args.variant}, batch {args.batch} at {args.input_size}, "
        f"{os.cpu_count()} cores, {args.busy} spinning process(es) beside it",
        flush=True,
    )
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    workers: dict[str, Worker] = {}
    try:
        for name in chosen:
            workers[name] = Worker(args.framework, settings, SETTINGS[name])
        first = {name: w.ask("first")["seconds"] for name, w in workers.items()}
        seconds: dict[str, list[float]] = {name: [] for name in workers}
        for r in range(args.rounds):
            for name in chosen if r % 2 == 0 else chosen[::-1]:
                seconds[name] += workers[name].ask(f"run {args.calls}")["seconds"]
        print(f"  {'setting':<26} {'threads':>20} {'images/s best':>13} {'median':>7} {'first step':>10}")
        for name, worker in workers.items():
            threads = ",".join(f"{k} {v}" for k, v in worker.ready["threads"].items())
            best, median = args.batch / min(seconds[name]), args.batch / statistics.median(seconds[name])
            print(f"  {name:<26} {threads:>20} {best:>13.1f} {median:>7.1f} {first[name]:>9.1f}s")
    finally:
        for worker in workers.values():
            worker.process.kill()
            worker.process.wait()
        for spinner in spinners:
            spinner.kill()
            spinner.join()
    print(f"uptime after: {_uptime()}")


if __name__ == "__main__":
    main()
