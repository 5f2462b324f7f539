"""Training parity (``check --train``): from one set of canonical weights and one batch,
two SGD-with-momentum steps in each framework, every quantity compared key by key with
the reference's as soon as it exists."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits, spec
from ..canonical import conv_key, random_params
from ..interface import Backend, is_judge
from . import parallel
from .compare import Agreement, agreement
from .inputs import seeded_input
from .memory import StoredRun, release
from .results import Timer, TrainRow, VariantReport

TRAIN_LR = 0.01
TRAIN_MOMENTUM = 0.9  # SGD's momentum means the same in all three; BatchNorm's does not
TRAIN_STEPS = 2  # the second step is the first that the momentum buffer changes
# Backpropagation through BatchNorm in training mode is ill-conditioned at random
# weights: float32 gradients differ from float64 ones by percents, in one framework as
# between two, whatever their conventions. In float64 the same amplification stays far
# below the 1e-4 tolerance, which then tests the conventions (docs/training.md).
TRAIN_DTYPE = "float64"
# Without BatchNorm float32 is not enough either at GoogLeNet's depth and random
# weights: the frameworks' float32 gradients and second-step weights part by more than
# the tolerance (docs/training.md has the figures), so every variant trains in float64.


def _quantities(
    backend: Backend,
    plan: spec.Plan,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    timer: Timer,
    fw: str,
    dtype: str = TRAIN_DTYPE,
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Every quantity of two SGD steps from ``params``, by canonical key, each as soon as
    it exists (so it can be compared and dropped)."""
    with timer(fw, f"build {dtype}"):
        model = backend.build(plan.variant, **plan.options.asdict(), dtype=dtype)
        backend.from_canonical(model, params)
    trainer = backend.Trainer(model, lr=TRAIN_LR, momentum=TRAIN_MOMENTUM, record=True)
    loss = {}
    for step in range(1, TRAIN_STEPS + 1):
        with timer(fw, f"train {dtype}"):
            loss[f"step {step}"] = np.array([trainer.step(x, y)[0]])
        if step == 1:
            yield "gradients", trainer.gradients()
            if plan.variant.convs.norm is not None:
                yield "batch statistics", trainer.batch_stats()
        weights = backend.to_canonical(model)
        stats = {k: weights.pop(k) for k in list(weights) if k.endswith(("running_mean", "running_var"))}
        yield f"weights after step {step}", weights
        if stats:
            yield f"running statistics after step {step}", stats
        del weights, stats  # not held through the next step
    yield "loss", loss


def training_plan(variant: str, options: Mapping[str, Any]) -> spec.Plan:
    """The plan a variant trains with in the check: dropout off, so every framework's
    step is the same arithmetic."""
    return spec.resolve(spec.without_dropout(spec.variant(variant)), **options)


def step_work(plan: spec.Plan, batch: int) -> limits.Work:
    """What one training step of ``plan`` holds in memory, at the variant's own size."""
    return limits.Work(plan, plan.input_size, batch, True, size_option=None)


def zero_gradients(plan: spec.Plan) -> dict[str, str]:
    """Conv biases followed by BatchNorm (pytorch-cifar100's) -> their conv weight. In
    training mode BatchNorm subtracts the batch mean, so a per-channel constant has no
    effect: the exact gradient is zero and what a framework returns is round-off, to be
    measured against the gradient of the unit's weight, not its own."""
    return {f"{conv_key(u)}.bias": f"{conv_key(u)}.weight" for u in plan.conv_units() if u.bias and u.norm}


def train_row(
    quantity: str, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], scales: Mapping[str, str]
) -> tuple[str, Agreement]:
    """The worst key of one quantity, or a failure naming a key that one side lacks."""
    missing = sorted(set(ref) ^ set(got))
    if missing:
        return f"{missing[0]} (only one side has it)", Agreement(float("inf"), float("inf"))
    agree = {
        k: agreement(ref[k], got[k], scale=float(np.abs(ref[scales[k]]).max()) if k in scales else None) for k in ref
    }
    worst = max(agree, key=lambda k: agree[k].max_rel)
    return worst, dataclasses.replace(agree[worst], passed=all(a.passed for a in agree.values()))


def check_training(
    report: VariantReport,
    backends: Mapping[str, Backend],
    batch: int,
    seed: int,
    timer: Timer,
    dtype: str = TRAIN_DTYPE,
) -> None:
    """From one set of canonical weights and one batch, with dropout off: the loss, every
    gradient, BatchNorm's batch statistics, and the weights and running statistics after
    each of two SGD-with-momentum steps, compared key by key with the reference."""
    plan = training_plan(report.variant, report.options)
    params = random_params(plan, seed, training=True)
    size = plan.input_size
    x = seeded_input(plan, size, batch, seed).astype(dtype)
    y = np.random.default_rng([seed, size, 1]).integers(0, plan.num_classes, batch)
    trainers = [fw for fw, b in backends.items() if not is_judge(b)]  # a judge runs inference only
    results: dict[str, dict[str, tuple[str, Agreement]]] = {}  # quantity -> framework -> worst key
    ref: dict[str, StoredRun] = {}  # the first framework that trains is the reference: its quantities
    trained = 0
    # a worker still writing when a signal ends the check must not turn the one-line
    # interruption into a failed removal
    with tempfile.TemporaryDirectory(prefix="conformance-", ignore_cleanup_errors=True) as tmp:

        def record(fw: str) -> dict[str, StoredRun] | str:
            """Every quantity of ``fw``, stored (on disk when large), or what it raised."""
            try:
                quantities = _quantities(backends[fw], plan, params, x, y, timer, fw, dtype)
                return {quantity: StoredRun(values, Path(tmp)) for quantity, values in quantities}
            except Exception as e:  # noqa: BLE001 - a broken port may fail to train at all: report it
                return f"{type(e).__name__}: {e}"

        # Frameworks in processes of their own train at once, the slowest so far first.
        workers = parallel.at_once(backends, trainers, step_work(plan, batch))
        with parallel.each(record, trainers, workers, parallel.longest_first(trainers, timer)) as records:
            for fw, found in records:
                if isinstance(found, str):
                    report.errors[f"{fw} training"] = found
                elif not trained:
                    ref = found
                else:  # a quantity the reference has and fw lacks fails
                    for quantity in ref:
                        scales = zero_gradients(plan) if quantity == "gradients" else {}
                        row = train_row(quantity, ref[quantity], found.get(quantity, {}), scales)
                        results.setdefault(quantity, {})[fw] = row
                trained += not isinstance(found, str)
                del found
                release()
        if trained < 2:
            return
        for quantity in sorted(ref, key=lambda q: q != "loss"):  # the loss first, as the steps ran
            rows = results[quantity]
            worst = {fw: w for fw, (w, _) in rows.items()}
            agree = {fw: a for fw, (_, a) in rows.items()}
            passed = all(a.passed for a in agree.values())
            report.training.append(TrainRow(quantity, len(ref[quantity]), worst, agree, passed))
