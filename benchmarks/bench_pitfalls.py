"""Where the pitfall fixture's time goes: each catalogue entry measured as the test
session measures it (``tests/conftest.py``'s ``pitfall_measurements``: batch 4, the
stages of Keras, Gluon and JAX run eagerly), in the catalogue's order, in one process.

Printed per (pitfall, variant): the wall seconds of ``measure.measure``, twice with
``--repeat 2`` (the second run shows how much of the first was compilation: XLA's
programs and JAX's per-operation kernels are cached in the process), the input size
and the first divergence against where the mistake is made; then the total and the
load average (the machine is shared: compare runs taken side by side).

    python benchmarks/bench_pitfalls.py [--names same-padding flax-bn-momentum ...] [--repeat 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import time


def main() -> None:
    from conformance import frameworks
    from conformance.interface import EAGER
    from conformance.teach import measure, pitfalls

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", choices=list(pitfalls.PITFALLS), default=list(pitfalls.PITFALLS))
    parser.add_argument("--batch", type=int, default=4, help="images per inference measurement (the fixture's: 4)")
    parser.add_argument("--repeat", type=int, choices=(1, 2), default=1, help="measure each entry once or twice")
    args = parser.parse_args()

    needed = sorted({measure.REFERENCE, *(pitfalls.PITFALLS[n].framework for n in args.names)})
    start = time.perf_counter()
    backends, skipped = frameworks.load(needed)
    print(f"load {', '.join(needed)}: {time.perf_counter() - start:.1f} s", flush=True)
    for name in {"keras", "mxnet", "jax"} & set(backends):
        backends[name] = pitfalls.patched(backends[name], stages=functools.partial(backends[name].stages, mode=EAGER))
    total = 0.0
    for name in args.names:
        pitfall = pitfalls.PITFALLS[name]
        for variant in pitfall.variants:
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                m = measure.measure(pitfall, variant, backends, skipped, batch=args.batch)
                times.append(time.perf_counter() - start)
            total += times[0]
            outcome = m.skipped or m.error or f"first {m.first}, made at {m.where}"
            shown = " then ".join(f"{t:6.1f}" for t in times)
            print(f"{shown} s  {name} on {variant} at {m.size} ({pitfall.kind}, {pitfall.framework}): {outcome}")
    print(f"total (first runs) {total:.1f} s; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
