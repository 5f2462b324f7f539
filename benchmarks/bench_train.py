"""Training throughput (images per second) of each framework, side by side in one run.

For each variant, every installed framework trains from the same canonical start on
the same generated batches with the same ``Trainer`` the ``train`` command uses
(Keras's step compiled by ``tf.function``, Gluon's network hybridized; Gluon is also
timed imperative, the way it trained before, for the ratio). Warm-up steps (tracing, allocator, caches)
are not timed; then ``--steps`` steps are, and the framework's images/s is printed with
its ratio to the fastest. Rounds alternate the frameworks, so a load change on the
machine falls on all of them:

    python benchmarks/bench_train.py [--variant inception_mnist --variant googlenet_d2l]
                                     [--frameworks torch,keras,mxnet] [--batch 32] [--steps 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from conformance import frameworks, spec
from conformance.canonical import initial_params
from conformance.train.data import prepare, synthetic

DEFAULT_VARIANTS = ("inception_mnist", "googlenet_d2l")
WARMUP = 3
# Besides each framework's Trainer as ``train`` runs it: Gluon's imperative step, to measure
# what hybridizing gains (its Trainer hybridizes where that measured faster).
ALSO = {"mxnet": {"mxnet imperative": {"hybridize": False}}}


def batches(variant: str, batch: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    p = spec.resolve(variant)
    split = synthetic(n_train=batch * steps, n_test=0, classes=p.num_classes)["train"]
    x = prepare(split.images, p.in_channels, p.input_size)
    return [(x[i : i + batch], split.labels[i : i + batch]) for i in range(0, len(x), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", choices=sorted(spec.VARIANTS))
    parser.add_argument("--frameworks", help="comma-separated, e.g. mxnet (default: every installed one)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    backends, skipped = frameworks.load(frameworks.parse(args.frameworks))
    for fw, why in skipped.items():
        print(f"skipped {fw}: {why}")
    print(
        f"training throughput, batch {args.batch}, {args.steps} steps x {args.rounds} rounds after "
        f"{WARMUP} warm-up steps; {', '.join(b.version() for b in backends.values())}"
    )
    for variant in args.variant or DEFAULT_VARIANTS:
        p = spec.resolve(variant)
        data = batches(variant, args.batch, args.steps)
        trainers = {}
        for fw, b in backends.items():
            for name, options in {fw: {}, **ALSO.get(fw, {})}.items():
                model = b.build(variant)
                b.from_canonical(model, initial_params(model.plan))
                trainers[name] = b.Trainer(model, lr=0.01, momentum=0.5, **options)
                for x, y in data[:WARMUP]:
                    trainers[name].step(x, y)
        seconds: dict[str, list[float]] = {fw: [] for fw in trainers}
        for r in range(args.rounds):
            for fw in list(trainers) if r % 2 == 0 else list(reversed(trainers)):
                start = time.perf_counter()
                for x, y in data:
                    trainers[fw].step(x, y)
                seconds[fw].append(time.perf_counter() - start)
        rates = {fw: args.batch * args.steps / min(s) for fw, s in seconds.items()}  # best round
        best = max(rates.values())
        print(
            f"\n{variant} ({p.in_channels} x {p.input_size} x {p.input_size}, {spec.count_params(p)[0]:,} parameters)"
        )
        for fw, rate in rates.items():
            spread = args.batch * args.steps / max(seconds[fw])
            print(f"  {fw:<16} {rate:8.1f} images/s  (slowest round {spread:.1f})  {rate / best:5.2f} x the fastest")


if __name__ == "__main__":
    main()
