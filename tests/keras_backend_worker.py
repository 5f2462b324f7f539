"""One Keras backend's side of tests/test_keras_backends.py and
benchmarks/bench_keras_backends.py, run as ``KERAS_BACKEND=<backend> python
tests/keras_backend_worker.py <job> <out.npz> ...``: Keras fixes its backend on import,
so each backend needs a process of its own. It writes what it measured to ``out.npz``;
the caller compares it with impl_torch's, which the same jobs measure with
``--package impl_torch`` (any package of the shared interface).

Jobs:

* ``counts``: every variant (with aux heads where it has them) built, its
  ``count_params`` beside the spec's;
* ``stages VARIANT SIZE DTYPE``: every stage on seeded canonical weights
  (``random_params``), in the backend's default mode (``--eager``: eagerly too; JAX
  compiles each op of an eager run on its first call, minutes at 224), and whether a
  canonical round trip is bit-identical;
* ``train VARIANT SIZE DTYPE``: one recorded SGD step from seeded weights without
  dropout: the loss and every gradient.

* ``exports VARIANT SIZE``: the backend's ONNX export of every stage run by ONNX
  Runtime beside its own stages, and its SavedModel export; each refusal's line
  (``interface.Unsupported``) where it has none.

``--swap`` (stages and train) loads the weights with two of conv1's output channels
swapped: the negative control, which must disagree with impl_torch.
``--float32-promotion`` puts back what ``impl_keras.engine.keep_float64`` mends (Keras's
type promotion turning float64 into float32 on jax and torch): the negative control of
the float64 step's precision.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance import interface, spec  # noqa: E402
from conformance.canonical import random_params  # noqa: E402
from conformance.check.inputs import seeded_input  # noqa: E402
from conformance.interface import Unsupported  # noqa: E402

SEED = 0
BATCH = 2


def swapped(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params`` with conv1's first two output channels exchanged (a wrong mapping)."""
    key = next(k for k in params if k.endswith(".weight") and params[k].ndim == 4)
    broken = dict(params)
    broken[key] = params[key][[1, 0, *range(2, params[key].shape[0])]]
    return broken


def counts(impl) -> dict[str, np.ndarray]:
    out = {}
    for variant in spec.VARIANTS:
        options = {"aux_logits": True} if spec.variant(variant).aux else {}
        plan = spec.resolve(variant, **options)
        model = impl.build(variant, **options)
        out[variant] = np.array([*impl.count_params(model), *spec.count_params(plan)])
    return out


def stages(impl, variant: str, size: int, dtype: str, swap: bool, eager: bool = False) -> dict[str, np.ndarray]:
    plan = spec.resolve(variant)
    params = random_params(plan, SEED)
    model = impl.build(variant, dtype=dtype)
    impl.from_canonical(model, swapped(params) if swap else params)
    back = impl.to_canonical(model)
    exact = all(np.array_equal(back[k], params[k].astype(back[k].dtype)) for k in params) and set(back) == set(params)
    x = seeded_input(plan, size, BATCH, SEED)
    out = {f"default/{k}": v for k, v in impl.stages(model, x).items()}
    if eager and impl.MODES[0] != "eager":
        out.update({f"eager/{k}": v for k, v in impl.stages(model, x, mode="eager").items()})
    out["round_trip_identical"] = np.array(exact)
    out["mode"] = np.array(impl.MODES[0])
    return out


def train(impl, variant: str, size: int, dtype: str, swap: bool) -> dict[str, np.ndarray]:
    plan = spec.resolve(spec.without_dropout(spec.variant(variant)))
    params = random_params(plan, SEED, training=True)
    model = impl.build(plan.variant, dtype=dtype)
    impl.from_canonical(model, swapped(params) if swap else params)
    x = seeded_input(plan, size, BATCH, SEED).astype(dtype)
    y = np.random.default_rng([SEED, size, 1]).integers(0, plan.num_classes, BATCH)
    trainer = impl.Trainer(model, lr=0.01, momentum=0.9, record=True)
    loss, _ = trainer.step(x, y)
    return {"loss": np.array([loss]), **{f"grad/{k}": v for k, v in trainer.gradients().items()}}


def exports(impl, variant: str, size: int) -> dict[str, np.ndarray]:
    from conformance.check.judges import session

    plan = spec.resolve(variant)
    model = impl.build(variant)
    x = seeded_input(plan, size, BATCH, SEED)
    out: dict[str, np.ndarray] = {}
    try:
        graph = impl.to_onnx(model, x.shape, False, True)
    except Unsupported as e:
        out["onnx_refused"] = np.array(str(e))
    else:
        run = session(graph)
        names = interface.output_names(plan, False, True)
        found = dict(zip(names, run.run(None, {run.get_inputs()[0].name: x}), strict=True))
        out.update({f"onnx/{k}": v for k, v in found.items()})
        out.update({f"default/{k}": v for k, v in impl.stages(model, x).items()})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            impl.to_savedmodel(model, Path(tmp) / "model")
        except Unsupported as e:
            out["savedmodel_refused"] = np.array(str(e))
        else:
            out["savedmodel_files"] = np.array(len(list((Path(tmp) / "model").rglob("*"))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=("counts", "stages", "train", "exports"))
    parser.add_argument("out", type=Path)
    parser.add_argument("variant", nargs="?")
    parser.add_argument("size", nargs="?", type=int)
    parser.add_argument("dtype", nargs="?", default="float32")
    parser.add_argument("--swap", action="store_true")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--package", default="impl_keras")
    parser.add_argument("--float32-promotion", action="store_true")
    args = parser.parse_args()
    impl = importlib.import_module(args.package)
    if args.float32_promotion:
        from keras.src.backend.common import dtypes

        dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float32"
    if args.job == "counts":
        found = counts(impl)
    elif args.job == "stages":
        found = stages(impl, args.variant, args.size, args.dtype, args.swap, args.eager)
    elif args.job == "exports":
        found = exports(impl, args.variant, args.size)
    else:
        found = train(impl, args.variant, args.size, args.dtype, args.swap)
    np.savez(args.out, **found)


if __name__ == "__main__":
    main()
