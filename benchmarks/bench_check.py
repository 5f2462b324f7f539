"""How long the full conformance check takes and how much memory it needs, as a user
runs it: ``python -m conformance check --train`` in a fresh process.

Target (issue #8): under 60 s and under 2 GB peak resident memory on this 2-core
machine. Prints the command measured, its wall time, its peak RSS (the kernel's
``ru_maxrss`` of the child), the machine's load average before and after (other
work on the cores slows the check), and the check's own time per framework and phase:

    python benchmarks/bench_check.py               # check --train, every variant
    python benchmarks/bench_check.py --no-train    # inference only
    python benchmarks/bench_check.py -- --frameworks torch,keras,mxnet,onnx   # any check options
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 60.0
TARGET_MB = 2048.0
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="measure `check` without --train")
    parser.add_argument("extra", nargs="*", help="more options for check (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "conformance", "check", *([] if args.no_train else ["--train"]), *args.extra]
        shown = " ".join(["python", *command[1:]])
        print(f"measuring: {shown}  (in {ROOT}, {os.cpu_count()} cores)", flush=True)
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run([*command, "--json", str(report)], cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        load_after = os.getloadavg()
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        doc = json.loads(report.read_text()) if report.exists() else None
    if doc is None:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
        sys.exit(f"check exited with {done.returncode} and wrote no report")
    print(next(line for line in reversed(done.stdout.splitlines()) if line.startswith(("PASS", "FAIL"))))
    print(f"\n{'framework':<12} {'phase':<14} {'seconds':>8}")
    for fw, phases in doc["timings"].items():
        for phase, s in phases.items():
            print(f"{fw:<12} {phase:<14} {s:8.2f}")
    by_fw = {fw: sum(p.values()) for fw, p in doc["timings"].items()}
    print("per framework: " + ", ".join(f"{fw} {s:.1f} s" for fw, s in by_fw.items()))
    print(f"rest (imports, seeded weights, comparisons, report): {seconds - sum(by_fw.values()):.1f} s")
    print(
        f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} cores: above 0 means other work shared the cores"
    )
    print(f"{shown}: {seconds:.1f} s (target {TARGET_SECONDS:.0f} s: {_verdict(seconds < TARGET_SECONDS)})")
    print(f"{shown}: peak RSS {peak_mb:.0f} MB (target {TARGET_MB:.0f} MB: {_verdict(peak_mb < TARGET_MB)})")
    sys.exit(0 if done.returncode == 0 else 1)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    main()
