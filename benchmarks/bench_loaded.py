"""Training images/s when another job takes a core: PyTorch's OpenMP threads against a
busy core, with the settings that could hold it up, side by side.

Each setting below runs ``bench``'s own training worker (``conformance.bench.run.Worker``
in the ``train`` role: the framework's ``Trainer``, one SGD step per call) in a fresh
process with its environment, in
alternating rounds; ``--busy N`` starts N processes that spin on a core each for the
whole run (the other job), ``--busy 0`` measures without them. The load average and
``uptime`` are printed before and after: other work on the machine counts too.

    python benchmarks/bench_loaded.py            # beside whatever else runs here
    python benchmarks/bench_loaded.py --busy 0 --framework keras
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.bench.run import Worker  # noqa: E402 - the checkout's, not an installed copy
from conformance.bench.settings import Settings  # noqa: E402

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
    settings = Settings(
        args.variant, args.batch, args.input_size, (args.framework,), True, args.rounds, args.calls, modes="default"
    )
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
    ready: dict[str, dict] = {}
    try:
        for name in chosen:
            workers[name] = Worker(
                "train", settings, sys.stderr, SETTINGS[name], framework=args.framework, mode="train"
            )
            ready[name] = workers[name].ask("")
        first = {name: w.ask("first")["seconds"] for name, w in workers.items()}
        seconds: dict[str, list[float]] = {name: [] for name in workers}
        for r in range(args.rounds):
            for name in chosen if r % 2 == 0 else chosen[::-1]:
                seconds[name] += workers[name].ask(f"run {args.calls}")["seconds"]
        print(f"  {'setting':<26} {'threads':>20} {'images/s best':>13} {'median':>7} {'first step':>10}")
        for name in workers:
            threads = ",".join(f"{k} {v}" for k, v in ready[name]["threads"].items())
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
