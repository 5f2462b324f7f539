"""How long the conformance check takes and how much memory each of its processes needs,
as a user runs it: ``python -m conformance check`` in a fresh process, with a child
process per framework (the default) and side by side with ``--in-process`` (everything
in one), alternating the two so that other work on the machine weighs on both alike.

Goals (issue #22): ``check --train`` at most 60 s and every process at most 1.5 GB peak
on this 2-core machine, ``check`` at most 40 s. Prints, per run, the wall time, the
user and system CPU seconds of all its processes (steadier than the wall time when other
work shares the cores), each process's peak resident memory (the kernel's ``VmHWM``, read from ``/proc`` while the
check runs; the largest is also the kernel's ``ru_maxrss`` of the children), their sum,
and the load average before and after (other work on the cores slows the check):

    python benchmarks/bench_check.py                              # check and check --train, two variants
    python benchmarks/bench_check.py --variant all --no-inference --layout children  # the README's check
    python benchmarks/bench_check.py --variant googlenet --rounds 2
    python benchmarks/bench_check.py --no-train -- --frameworks torch,keras,mxnet
    python benchmarks/bench_check.py --layout children --against /work/main --profile

``--against DIR`` runs the same commands from another checkout (its code, its
directory), alternating with this one's; ``--profile`` prints each run's own timing
lines: each framework's seconds per phase (import, build, load, each input size's eager
run and each mode, round trips, the training step per dtype), wall time of its child.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = {True: 60.0, False: 40.0}  # check --train, check
TARGET_MB = 1536.0  # every process
ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.1
# What both layouts can run (keras-jax and keras-torch need a process of their own).
SAME = ("torch", "keras", "mxnet", "jax")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def _peak_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def _name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return "spawn child" if "multiprocessing" in text else "check"


def measure(
    command: list[str], root: Path = ROOT
) -> tuple[float, tuple[float, float], int, dict[int, tuple[str, float]], str, list[str]]:
    """(seconds, (user, system) CPU seconds of every process, exit code, {pid: (what, peak
    MB)}, the last line, the timing lines) of one run of ``command`` in checkout ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(root)}
    # the report into a file: a pipe read only at the end would hold a whole check's
    # report (beyond the pipe's 64 KB) and stop it at its last print
    with tempfile.TemporaryFile("w+") as printed:
        check = subprocess.Popen(command, cwd=root, env=env, stdout=printed, stderr=subprocess.DEVNULL, text=True)
        peaks: dict[int, tuple[str, float]] = {}
        while check.poll() is None:
            for pid in _tree(check.pid):
                mb = _peak_mb(pid)
                if mb is not None and not (pid in peaks and peaks[pid][1] >= mb):
                    peaks[pid] = (peaks.get(pid, ("", 0))[0] or _name(pid), mb)
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - start
        printed.seek(0)
        out = printed.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the check's, its children's included
    cpu = (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
    lines = out.splitlines()
    last = next((line for line in reversed(lines) if line.startswith(("PASS", "FAIL"))), "(no verdict)")
    timing, current = [], False
    for line in lines:  # "  time: torch 10.5 s (build 1.8, ...)" and its wrapped lines
        current = line.startswith("  time:") or (current and line.startswith("        "))
        timing += [line] if current else []
    return seconds, cpu, check.returncode, peaks, last, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        action="append",
        help="variant, or all: every variant in one check as a user runs it "
        "(repeatable; default: inception_mnist, googlenet)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two layouts (default: 1)")
    parser.add_argument("--no-train", action="store_true", help="measure `check` only")
    parser.add_argument("--no-inference", action="store_true", help="measure `check --train` only")
    parser.add_argument(
        "--layout", choices=("both", "children", "in-process"), default="both", help="which layouts (default: both)"
    )
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout to run side by side (the head)")
    parser.add_argument("--profile", action="store_true", help="print each run's seconds per framework and phase")
    parser.add_argument(
        "extra", nargs="*", help="more options for check (after --; default: --frameworks " + ",".join(SAME) + ")"
    )
    args = parser.parse_args()
    if args.against is not None and not (args.against / "conformance").is_dir():
        parser.error(f"--against {args.against}: expected a checkout of this repository (holding conformance/)")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: expected 1 or more")
    args.extra = args.extra or ["--frameworks", ",".join(SAME)]
    variants = args.variant or ["inception_mnist", "googlenet"]
    trains = [t for t in (False, True) if not (t and args.no_train) and not (not t and args.no_inference)]
    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    layouts = ("children", "in-process") if args.layout == "both" else (args.layout,)
    roots = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    heads = f"{'variant':<16} {'check':<8} {'code':<8} {'layout':<11} {'seconds':>8} {'user':>6} {'sys':>6}"
    heads += f" {'processes':>9} {'max MB':>7}"
    heads += f" {'sum MB':>7}"
    print(f"{heads}  verdict")
    for variant in variants:
        for train in trains:
            for _ in range(args.rounds):
                for layout in layouts:
                    for code_name, root in roots.items():
                        chosen = [] if variant == "all" else ["--variant", variant]
                        command = [sys.executable, "-m", "conformance", "check", *chosen, *args.extra]
                        command += ["--train"] * train + ["--in-process"] * (layout == "in-process")
                        seconds, (user, system), code, peaks, last, timing = measure(command, root)
                        sizes = [mb for _, mb in peaks.values()]
                        most, total = max(sizes, default=0.0), sum(sizes)
                        met = seconds <= TARGET_SECONDS[train] and most <= TARGET_MB
                        what = f"{variant:<16} {'--train' if train else '-':<8} {code_name:<8} {layout:<11}"
                        row = (
                            f"{what} {seconds:8.1f} {user:6.1f} {system:6.1f} {len(peaks):9d} {most:7.0f} {total:7.0f}"
                        )
                        verdict = f"{last.split(':')[0]} (exit {code}); goal {'met' if met else 'MISSED'}"
                        print(f"{row}  {verdict}", flush=True)
                        for line in timing if args.profile else ():
                            print(f"    {line.strip()}")
    print(f"ru_maxrss of the largest process: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")
    print(f"load average after: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (above 0: other work shared them)")


if __name__ == "__main__":
    main()
