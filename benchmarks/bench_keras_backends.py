"""How far apart Keras's three backends compute the same model: ``impl_keras`` on
tensorflow, jax and torch, and impl_torch, from the same seeded canonical weights
(``random_params``) and the same seeded batch, every stage compared.

Each backend runs in a process of its own (tests/keras_backend_worker.py; Keras fixes its
backend on import), in its default mode (graph, jit, eager). Printed per case and pair:
the largest absolute and relative difference over every stage (and the stage it is at),
the logits' own, and how many stages are bit-identical; then one recorded SGD step's loss
and gradients:

    python benchmarks/bench_keras_backends.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.check.compare import agreement  # noqa: E402

WORKER = ROOT / "tests" / "keras_backend_worker.py"
SIDES = {"keras-tf": "tensorflow", "keras-jax": "jax", "keras-torch": "torch", "torch": None}
STAGE_CASES = [
    (v, s, d)
    for v, s in (("googlenet_bn", 224), ("googlenet", 224), ("inception_mnist", 28))
    for d in ("float32", "float64")
]
TRAIN_CASES = [(v, s, d) for v, s in (("googlenet_cifar", 32), ("inception_mnist", 28)) for d in ("float32", "float64")]


def measure(side: str, job: str, case: tuple, tmp: Path) -> dict[str, np.ndarray]:
    out = tmp / f"{side}-{job}.npz"
    backend = SIDES[side]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend or "tensorflow"}
    package = ["--package", "impl_torch"] if backend is None else []
    done = subprocess.run(
        [sys.executable, str(WORKER), job, str(out), *map(str, case), *package],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{side} {job} {case}: {done.stderr[-2000:]}")
    with np.load(out) as found:
        return {
            k.removeprefix("default/"): found[k] for k in found.files if k.startswith(("default/", "grad/", "loss"))
        }


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    """The worst stage (largest relative difference), the logits (or loss), identical count."""
    found = {k: agreement(a[k], b[k]) for k in a}
    worst = max(found, key=lambda k: found[k].max_rel)
    last = "logits" if "logits" in found else "loss"
    same = sum(np.array_equal(a[k], b[k]) for k in a)
    return (
        f"worst {worst:<28} abs {found[worst].max_abs:8.1e} rel {found[worst].max_rel:8.1e}   "
        f"{last} abs {found[last].max_abs:8.1e} rel {found[last].max_rel:8.1e}   identical {same}/{len(a)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="inception_mnist only")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N stage cases")
    args = parser.parse_args()
    quick = lambda cases: [c for c in cases if c[0] == "inception_mnist"] if args.quick else cases  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for job, cases in (("stages", quick(STAGE_CASES)[args.skip :]), ("train", quick(TRAIN_CASES))):
            for case in cases:
                print(f"{job} {' '.join(map(str, case))}, batch 2, seed 0", flush=True)
                # impl_torch's float64 model takes float64 input, which the interface refuses:
                # float64 stages compare the Keras backends among themselves
                sides = [s for s in SIDES if not (job == "stages" and case[2] == "float64" and SIDES[s] is None)]
                found = {side: measure(side, job, case, Path(tmp)) for side in sides}
                for a, b in itertools.combinations(sides, 2):
                    print(f"  {a:>11} vs {b:<11} {compare(found[a], found[b])}", flush=True)


if __name__ == "__main__":
    main()
