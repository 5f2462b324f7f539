"""How long the full conformance check takes, and which part dominates.

Target (issue #2): under 60 s for every variant, three frameworks and a few input
sizes on 2 cores. Everything is measured in one run, side by side:

    python benchmarks/bench_check.py [--input-size 224 --input-size 225 ...] [--batch 2]
"""

from __future__ import annotations

import argparse
import time

from conformance import frameworks, spec
from conformance.check import harness
from conformance.check.report import count_checks

TARGET_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, action="append")
    parser.add_argument("--batch", type=int, default=harness.DEFAULT_BATCH)
    args = parser.parse_args()
    sizes = args.input_size  # None: each variant's own size, 239 and 97

    start = time.perf_counter()
    timer = harness.Timer()
    backends, skipped = {}, {}
    for name in frameworks.FRAMEWORKS:  # one at a time, so each import is timed alone
        with timer(name, "import"):
            found, missing = frameworks.load([name])
        backends.update(found)
        skipped.update(missing)
    report = harness.run(list(spec.VARIANTS), backends, skipped, sizes, args.batch, timer=timer)
    total = time.perf_counter() - start

    checks, failed = count_checks(report)
    print(
        f"full check: {len(spec.VARIANTS)} variants x {len(backends)} frameworks x sizes "
        f"{sizes or 'own, 239, 97'}, "
        f"batch {args.batch}: {checks} checks, {failed} failed"
    )
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")
    parts = sorted(
        ((s, fw, phase) for fw, phases in timer.seconds.items() for phase, s in phases.items()), reverse=True
    )
    accounted = sum(s for s, _, _ in parts)
    print(f"\n{'framework':<10} {'phase':<10} {'seconds':>8} {'share':>7}")
    for s, fw, phase in parts:
        print(f"{fw:<10} {phase:<10} {s:8.2f} {s / total:7.1%}")
    rest = total - accounted  # seeded weights, comparisons, report
    print(f"{'harness':<10} {'compare':<10} {rest:8.2f} {rest / total:7.1%}")
    by_fw = {fw: sum(p.values()) for fw, p in timer.seconds.items()}
    print("\nper framework: " + ", ".join(f"{fw} {s:.1f} s ({s / total:.0%})" for fw, s in by_fw.items()))
    s, fw, phase = parts[0]
    print(f"dominant part: {fw} {phase}, {s:.1f} s of {total:.1f} s")
    print(
        f"total {total:.1f} s; target {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'MISSED'} "
        f"({total / TARGET_SECONDS:.0%} of the budget)"
    )


if __name__ == "__main__":
    main()
