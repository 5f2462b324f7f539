"""How long verify's diagnosis takes, and how much memory: googlenet_bn with the whole catalogue.

The goal (issue 20): googlenet_bn at 224 with every mistake of the catalogue and every
pair of two, at most 60 s and 2 GB peak on a 2-core machine. Each case runs in its own
process (its peak RSS is its own, PyTorch included): the user's logits come from the
suite's PyTorch port with the case's mistakes made (``Pitfall.broken``), and
``diagnose`` gets the seeded canonical weights, batches at the variant's size and at an
odd one, and those logits. Printed: the wall time of ``diagnose``, the peak RSS of the
process, that time as a number of reference runs on the same inputs in the same process
(what it costs whatever the load), what it found, and the load average (the machine is
shared).

    python benchmarks/bench_diagnose.py [--variant googlenet_bn] [--batch 8] [--sizes 224 239]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALED = "inception4c.branch1.conv.weight"
CASES = {  # what the user's model gets wrong
    "correct": (),
    "one mistake (branch-order)": ("branch-order",),
    "two mistakes (transform-input, relu-missing)": ("transform-input", "relu-missing"),
    "outside the catalogue (inception4c scaled by 1.01)": ("scaled",),
}


def one(case: str, variant: str, batch: int, sizes: list[int]) -> dict:
    from conformance import canonical, frameworks, spec
    from conformance.check.inputs import full_options
    from conformance.teach import stages
    from conformance.teach.pitfalls import PITFALLS, patched
    from conformance.verify.diagnose import candidates, diagnose

    torch_ = frameworks.load(["torch"])[0]["torch"]
    options = full_options(spec.VARIANTS[variant])
    plan = spec.resolve(variant, **options)
    params = canonical.random_params(plan, 0)
    inputs = [stages.seeded_input(plan, size, batch, seed) for seed, size in enumerate(sizes)]
    with contextlib.ExitStack() as stack:
        b = torch_
        for name in CASES[case]:
            if name == "scaled":
                b = patched(b, from_canonical=lambda m, p, b=b: b.from_canonical(m, {**p, SCALED: p[SCALED] * 1.01}))
            else:
                b = stack.enter_context(PITFALLS[name].broken(b))
        model = b.build(variant, **options)
        b.from_canonical(model, params)
        got = [b.forward(model, x) for x in inputs]
    del model
    pool = candidates(plan, sizes)
    reference = torch_.build(variant, **options)
    torch_.from_canonical(reference, params)
    start = time.perf_counter()
    for x in inputs:
        torch_.forward(reference, x, mode="eager")
    one_run = time.perf_counter() - start  # the reference on every input once: the unit of work
    del reference
    start = time.perf_counter()
    found = diagnose(plan, params, inputs, got)
    seconds = time.perf_counter() - start
    return {
        "case": case,
        "seconds": seconds,
        "runs": seconds / one_run,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "candidates": len(pool),
        "pairs": len(pool) * (len(pool) - 1) // 2,
        "found": [[list(f.pitfalls), f.max_rel, list(f.where)] for f in found],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="googlenet_bn")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 239])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.variant, args.batch, args.sizes)))
        return
    print(
        f"diagnose: {args.variant}, batches of {args.batch} at {' and '.join(map(str, args.sizes))}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for case in CASES:
        cmd = [sys.executable, __file__, "--one", case, "--variant", args.variant, "--batch", str(args.batch)]
        r = subprocess.run(
            [*cmd, "--sizes", *map(str, args.sizes)], check=False, capture_output=True, text=True, env=env
        )
        if r.returncode != 0:
            print(f"  {case}: failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        found = "; ".join(f"{' + '.join(n)} ({rel:.1e}, at {', '.join(w)})" for n, rel, w in d["found"]) or "[]"
        print(
            f"  {case}: {d['seconds']:.1f} s (the time of {d['runs']:.1f} reference runs on the inputs), "
            f"peak RSS {d['peak_mb']:.0f} MB "
            f"({d['candidates']} mistakes, {d['pairs']} pairs); found: {found}"
        )
    print(f"  load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
