"""The conformance check: one set of canonical weights, every installed framework.

For each variant: parameter counts (each framework's own API) against the spec,
bit-identical round trips, and, at each input size, every stage's shape against
the spec and its values against the reference framework.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import spec
from ..canonical import conv_key, random_params
from ..interface import Backend
from .compare import REL_TOL, Agreement, agreement, identical

ODD_SIZES = (239, 97)  # besides each variant's own size: odd maps, where ceil and floor differ
DEFAULT_BATCH = 2


@dataclass
class StageRow:
    stage: str
    expected: tuple[int, ...] | None  # None: the framework produced a stage the spec lacks
    shapes: dict[str, tuple[int, ...] | None]
    agreement: dict[str, Agreement]  # every framework but the reference
    passed: bool


@dataclass
class SizeReport:
    size: int
    aux: bool  # whether the aux heads ran (the aux pool admits this size)
    stages: list[StageRow]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.stages)


@dataclass
class TrainRow:
    """One quantity of the training-parity check, worst key first: e.g. the gradients."""

    quantity: str
    keys: int  # how many tensors were compared
    worst: dict[str, str]  # framework -> the key with the largest relative error
    agreement: dict[str, Agreement]  # every framework but the reference: its worst key
    passed: bool


@dataclass
class VariantReport:
    variant: str
    options: dict[str, Any]
    counts: dict[str, tuple[int, int]]  # "spec" and each framework: (trainable, statistics)
    roundtrip: dict[str, list[str]]  # framework or chain -> keys that changed (empty: identical)
    sizes: list[SizeReport] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # framework -> what raised
    skipped_sizes: dict[int, str] = field(default_factory=dict)  # size -> why the variant cannot run it
    training: list[TrainRow] = field(default_factory=list)  # check --train

    @property
    def counts_passed(self) -> bool:
        return all(c == self.counts["spec"] for c in self.counts.values())

    @property
    def passed(self) -> bool:
        return (
            self.counts_passed
            and not self.errors
            and all(not v for v in self.roundtrip.values())
            and all(s.passed for s in self.sizes)
            and all(r.passed for r in self.training)
        )


@dataclass
class Report:
    frameworks: dict[str, str]  # name -> version
    skipped: dict[str, str]  # name -> reason and install hint
    reference: str | None
    batch: int
    seed: int
    rel_tol: float
    variants: list[VariantReport]
    timings: dict[str, dict[str, float]]  # framework -> phase -> seconds

    @property
    def passed(self) -> bool:
        return bool(self.frameworks) and all(v.passed for v in self.variants)


class Timer:
    """Seconds spent per framework and phase (build, load, forward, roundtrip)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, who: str, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            phases = self.seconds.setdefault(who, {})
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start


def full_options(variant: spec.Variant) -> dict[str, Any]:
    """Options that exercise every parameter and code path the variant has (the variant's
    own number of classes)."""
    options: dict[str, Any] = {"aux_logits": variant.aux is not None}
    if variant.input.transform is not None:
        options["transform_input"] = True
    return options


def inadmissible(variant: str, size: int) -> str | None:
    """Why ``variant`` cannot run at ``size`` (too small, or a fixed pool that does not
    give fc its 1 x 1 map), or None."""
    try:
        spec.stage_shapes(spec.resolve(variant), size)
    except spec.SpecError as e:
        return str(e)
    return None


def check_input_sizes(variants: list[str], sizes: tuple[int, ...] | list[int]) -> None:
    """Fail fast, naming the option, on a size that none of the variants can run."""
    for size in sizes:
        reasons = [inadmissible(v, size) for v in variants]
        if all(reasons):
            raise spec.SpecError(f"--input-size {size}: no variant can run it: {variants[0]}: {reasons[0]}")


def _input(p: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, p.in_channels, size, size)).astype(np.float32)


def _compare_size(
    p: spec.Plan, size: int, batch: int, outs: Mapping[str, Mapping[str, np.ndarray]], reference: str
) -> SizeReport:
    expected = spec.expected_shapes(p, size, batch)
    names = list(expected) + [k for o in outs.values() for k in o if k not in expected]
    rows = []
    for stage in dict.fromkeys(names):
        want = expected.get(stage)
        shapes = {fw: (o[stage].shape if stage in o else None) for fw, o in outs.items()}
        passed = want is not None and all(s == want for s in shapes.values())
        agree: dict[str, Agreement] = {}
        ref = outs[reference].get(stage)
        for fw, o in outs.items():
            if fw == reference or ref is None or stage not in o or o[stage].shape != ref.shape:
                continue
            agree[fw] = agreement(ref, o[stage], logits=stage == "logits" or stage in {h.name for h in p.aux})
            passed = passed and agree[fw].passed
        rows.append(StageRow(stage, want, shapes, agree, passed))
    return SizeReport(size, spec.aux_admits(p, size), rows)


def check_variant(
    name: str, backends: Mapping[str, Backend], sizes: tuple[int, ...] | list[int], batch: int, seed: int, timer: Timer
) -> VariantReport:
    options = full_options(spec.VARIANTS[name])
    p = spec.resolve(name, **options)
    params = random_params(p, seed)
    report = VariantReport(name, options, {"spec": spec.count_params(p)}, {})
    models = {}
    for fw, b in backends.items():
        try:
            with timer(fw, "build"):
                model = b.build(name, **options)
            with timer(fw, "load"):
                b.from_canonical(model, params)
            models[fw] = model
            report.counts[fw] = tuple(b.count_params(model))  # type: ignore[assignment]
        except Exception as e:  # noqa: BLE001 - one framework's failure must not hide the others' results
            report.errors[fw] = f"{type(e).__name__}: {e}"
    if not models:
        return report
    reference = next(iter(models))
    for size in sizes:
        reason = inadmissible(name, size)
        if reason:
            report.skipped_sizes[size] = reason
            continue
        outs = {}
        for fw, model in models.items():
            try:
                with timer(fw, "forward"):
                    outs[fw] = backends[fw].stages(model, _input(p, size, batch, seed))
            except Exception as e:  # noqa: BLE001 - a broken port may fail to run at all: report it
                report.errors[f"{fw} at {size}"] = f"{type(e).__name__}: {e}"
        if outs:
            report.sizes.append(
                _compare_size(p, size, batch, outs, reference if reference in outs else next(iter(outs)))
            )
    for fw, model in models.items():  # canonical -> framework -> canonical
        with timer(fw, "roundtrip"):
            report.roundtrip[fw] = identical(params, backends[fw].to_canonical(model))
    if len(models) > 1:  # torch -> keras -> mxnet -> torch, through each adapter
        chain = [*models, reference]
        current = params
        for fw in chain:
            with timer(fw, "roundtrip"):
                backends[fw].from_canonical(models[fw], current)
                current = backends[fw].to_canonical(models[fw])
        report.roundtrip[" -> ".join(chain)] = identical(params, current)
    return report


# --------------------------------------------------------------------------------------
# Training parity (check --train)
# --------------------------------------------------------------------------------------

TRAIN_LR = 0.01
TRAIN_MOMENTUM = 0.9  # SGD's momentum means the same in all three; BatchNorm's does not
TRAIN_STEPS = 2  # the second step is the first that the momentum buffer changes
# Training parity runs in float64. Backpropagation through BatchNorm in training mode
# is ill-conditioned at random weights: in PyTorch alone, float32 gradients differ
# from float64 ones by 3e-2 to 9e-2 relative on their worst tensor (googlenet_cifar at
# 32, three seeds; googlenet_bn at 224: 3e-2; batches of 2 to 32 alike), while without
# BatchNorm they agree to 2e-6. Two float32 frameworks differ as much, whatever their
# conventions. In float64 the same amplification leaves < 1e-12 on the gradients, so
# 1e-4 tests the conventions.
TRAIN_DTYPE = "float64"


def without_dropout(v: spec.Variant) -> spec.Variant:
    """The variant with every dropout rate 0: random masks cannot agree across frameworks."""
    aux = None if v.aux is None else dataclasses.replace(v.aux, dropout=0.0)
    return dataclasses.replace(v, head=dataclasses.replace(v.head, dropout=0.0), aux=aux)


def _train(
    backend: Backend,
    p: spec.Plan,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    timer: Timer,
    fw: str,
    dtype: str = TRAIN_DTYPE,
) -> dict[str, dict[str, np.ndarray]]:
    """Every quantity of two SGD steps from ``params``, by canonical key."""
    with timer(fw, "build"):
        model = backend.build(p.variant, **p.options.asdict(), dtype=dtype)
        backend.from_canonical(model, params)
    trainer = backend.Trainer(model, lr=TRAIN_LR, momentum=TRAIN_MOMENTUM, record=True)
    out: dict[str, dict[str, np.ndarray]] = {"loss": {}}
    for step in range(1, TRAIN_STEPS + 1):
        with timer(fw, "train"):
            out["loss"][f"step {step}"] = np.array([trainer.step(x, y)[0]])
        if step == 1:
            out["gradients"] = trainer.gradients()
            if p.variant.convs.norm is not None:
                out["batch statistics"] = trainer.batch_stats()
        weights = backend.to_canonical(model)
        stats = {k: w for k, w in weights.items() if k.endswith(("running_mean", "running_var"))}
        out[f"weights after step {step}"] = {k: w for k, w in weights.items() if k not in stats}
        if stats:
            out[f"running statistics after step {step}"] = stats
    return out


def zero_gradients(p: spec.Plan) -> dict[str, str]:
    """Conv biases followed by BatchNorm (pytorch-cifar100's) -> their conv weight. In
    training mode BatchNorm subtracts the batch mean, so a per-channel constant has no
    effect: the exact gradient is zero and what a framework returns is round-off, to be
    measured against the gradient of the unit's weight, not its own."""
    return {f"{conv_key(u)}.bias": f"{conv_key(u)}.weight" for u in p.conv_units() if u.bias and u.norm}


def _train_row(
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
    p = spec.resolve(without_dropout(spec.variant(report.variant)), **report.options)
    params = random_params(p, seed, training=True)
    size = p.input_size
    x = _input(p, size, batch, seed).astype(dtype)
    y = np.random.default_rng([seed, size, 1]).integers(0, p.num_classes, batch)
    outs = {}
    for fw, b in backends.items():
        try:
            outs[fw] = _train(b, p, params, x, y, timer, fw, dtype)
        except Exception as e:  # noqa: BLE001 - a broken port may fail to train at all: report it
            report.errors[f"{fw} training"] = f"{type(e).__name__}: {e}"
    if len(outs) < 2:
        return
    reference, *others = outs
    for quantity, ref in outs[reference].items():
        worst, agree = {}, {}
        scales = zero_gradients(p) if quantity == "gradients" else {}
        for fw in others:
            worst[fw], agree[fw] = _train_row(quantity, ref, outs[fw].get(quantity, {}), scales)
        report.training.append(TrainRow(quantity, len(ref), worst, agree, all(a.passed for a in agree.values())))


def default_sizes(variant: str) -> list[int]:
    """The variant's own input size, then the odd sizes, then any the variant adds."""
    v = spec.VARIANTS[variant]
    return list(dict.fromkeys((v.input.size, *ODD_SIZES, *v.input.check_sizes)))


def run(
    variants: list[str],
    backends: Mapping[str, Backend],
    skipped: Mapping[str, str],
    sizes: tuple[int, ...] | list[int] | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    timer: Timer | None = None,
    train: bool = False,
) -> Report:
    """The full check. ``backends`` maps a framework name to its implementation package
    (or any object with the same functions, e.g. a deliberately broken port). ``sizes``:
    None checks each variant at :func:`default_sizes`. ``train``: also the training
    parity (:func:`check_training`), at each variant's own size."""
    if batch < 1:
        raise ValueError(f"--batch: expected a positive integer, got {batch}")
    if train and batch < 2:
        raise ValueError("--batch: --train needs at least 2 images (BatchNorm's batch variance)")
    timer = timer or Timer()
    reports = [check_variant(v, backends, sizes or default_sizes(v), batch, seed, timer) for v in variants]
    for r in reports if train else ():
        check_training(r, backends, batch, seed, timer)
    return Report(
        {fw: b.version() for fw, b in backends.items()},
        dict(skipped),
        next(iter(backends), None),
        batch,
        seed,
        REL_TOL,
        reports,
        timer.seconds,
    )
