"""The conformance check: one set of canonical weights, every installed framework.

For each variant: parameter counts (each framework's own API) against the spec,
bit-identical round trips, and, at each input size, every stage's shape against
the spec and its values against the reference framework (each framework's eager
mode, and any judge: ONNX Runtime on an exported graph), and every other mode of each
framework (its fast inference path) against that framework's own eager run.

Memory: each run's activations are compared as soon as they exist and then dropped,
and what a variant allocated is returned to the OS before the next (``release``), so
the peak is one variant's, not the sum.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits, spec
from ..canonical import conv_key, random_params
from ..interface import EAGER, Backend, Unsupported, forget_compiled, is_judge
from .compare import REL_TOL, Agreement, agreement, identical

ODD_SIZES = (239, 97)  # besides each variant's own size: odd maps, where ceil and floor differ
DEFAULT_BATCH = 2


@dataclass
class StageRow:
    stage: str
    expected: tuple[int, ...] | None  # None: the framework produced a stage the spec lacks
    shapes: dict[str, tuple[int, ...] | None]  # each run (a framework, or "framework mode")
    agreement: dict[str, Agreement]  # every run but the one it is compared with
    passed: bool


@dataclass
class SizeReport:
    size: int
    aux: bool  # whether the aux heads ran (the aux pool admits this size)
    stages: list[StageRow]  # each framework's eager run, and each judge, against the reference
    modes: list[StageRow] = field(default_factory=list)  # "framework mode" against its eager run

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.stages) and all(r.passed for r in self.modes)


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
    unsupported: dict[str, str] = field(default_factory=dict)  # "judge at size" -> what its exporter lacks

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
    timings: dict[str, dict[str, float]]  # framework -> phase (or mode) -> seconds
    modes: dict[str, list[str]] = field(default_factory=dict)  # framework -> its modes, the default first
    judges: list[str] = field(default_factory=list)  # which of the frameworks are judges

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


def check_work(variants: list[str], sizes: list[int] | None, batch: int, train: bool = False) -> None:
    """Refuse, before any framework is imported, a --batch whose activations at any size
    the check runs (each variant's own and the odd ones by default) exceed the memory."""
    for v in variants:
        p = spec.resolve(v)
        for size in sizes or default_sizes(v):
            if inadmissible(v, size) is None:
                limits.check_work(limits.Work(p, size, batch, size_option="--input-size" if sizes else None))
        if train:
            limits.check_work(limits.Work(p, p.input_size, batch, True, size_option=None))


def _input(p: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, p.in_channels, size, size)).astype(np.float32)


class Rows:
    """One input size's stage table, built one run at a time: a run's activations are
    compared when they exist and can then be freed (a stage of googlenet_cifar at 239 is
    84 MB), instead of every framework's being held until the end."""

    def __init__(self, p: spec.Plan, size: int, batch: int) -> None:
        self.p = p
        self.expected = spec.expected_shapes(p, size, batch)
        self.names: dict[str, None] = dict.fromkeys(self.expected)
        self.shapes: dict[str, dict[str, tuple[int, ...]]] = {}  # run -> stage -> shape
        self.agree: dict[str, dict[str, Agreement]] = {}  # stage -> run -> agreement

    def add(self, run: str, out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray] | None) -> None:
        """Record a run's shapes and compare it with ``ref`` (None: it is the reference)."""
        self.names.update(dict.fromkeys(out))
        self.shapes[run] = {k: v.shape for k, v in out.items()}
        heads = {"logits", *(h.name for h in self.p.aux)}
        for stage, got in out.items():
            want = None if ref is None else ref.get(stage)
            if want is not None and want.shape == got.shape:
                self.agree.setdefault(stage, {})[run] = agreement(want, got, logits=stage in heads)

    def rows(self) -> list[StageRow]:
        rows = []
        for stage in self.names:
            want = self.expected.get(stage)
            shapes = {run: s.get(stage) for run, s in self.shapes.items()}
            agree = self.agree.get(stage, {})
            passed = want is not None and all(s == want for s in shapes.values())
            passed = passed and all(a.passed for a in agree.values())
            rows.append(StageRow(stage, want, shapes, agree, passed))
        return rows


SPILL_BYTES = 64 << 20  # a run's stages above this wait on disk, not in memory


class Kept(Mapping[str, np.ndarray]):
    """A run's stages, kept to compare later runs with. Above ``SPILL_BYTES`` (the
    stages of googlenet_cifar at 239 are 352 MB per run) they wait in a temporary
    directory and each is mapped back only while it is compared: the kernel's page
    cache holds them, and the process holds one stage instead of a whole run."""

    def __init__(self, out: Mapping[str, np.ndarray], directory: Path) -> None:
        self.spilled = sum(v.nbytes for v in out.values()) > SPILL_BYTES
        self.arrays: dict[str, np.ndarray] = {}
        self.paths: dict[str, Path] = {}
        for i, (k, v) in enumerate(out.items()):
            if self.spilled:
                self.paths[k] = directory / f"{id(self)}-{i}.npy"
                np.save(self.paths[k], v, allow_pickle=False)
            else:
                self.arrays[k] = v

    def __getitem__(self, key: str) -> np.ndarray:
        if not self.spilled:
            return self.arrays[key]
        return np.load(self.paths[key], mmap_mode="r", allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths if self.spilled else self.arrays)

    def __len__(self) -> int:
        return len(self.paths if self.spilled else self.arrays)


def mode_run(fw: str, mode: str) -> str:
    """How a framework's mode is named in the report: ``torch channels_last``."""
    return f"{fw} {mode}"


def _check_size(
    p: spec.Plan,
    size: int,
    x: np.ndarray,
    backends: Mapping[str, Backend],
    models: Mapping[str, Any],
    timer: Timer,
    errors: dict[str, str],
    unsupported: dict[str, str],
) -> SizeReport | None:
    """Every framework's eager stages (a judge's own) against the first that runs, and
    each of its other modes against its eager stages; None if nothing ran."""
    stages, modes = Rows(p, size, len(x)), Rows(p, size, len(x))
    ref: Kept | None = None
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        for fw, model in models.items():
            b = backends[fw]
            own = b.MODES[0] if is_judge(b) else EAGER
            try:
                with timer(fw, "forward" if own == EAGER else own):
                    out = b.stages(model, x, mode=own)
            except Unsupported as e:  # a judge whose exporter cannot: said, not failed
                unsupported[f"{fw} at {size}"] = str(e)
                continue
            except Exception as e:  # noqa: BLE001 - a broken port may fail to run at all: report it
                errors[f"{fw} at {size}"] = f"{type(e).__name__}: {e}"
                continue
            stages.add(fw, out, ref)
            fast_modes = [m for m in b.MODES if m != EAGER and not is_judge(b)]
            kept = Kept(out, Path(tmp)) if ref is None or fast_modes else None  # the reference, or for the modes
            del out
            if ref is None:
                ref = kept
            for mode in fast_modes:
                release()
                try:
                    with timer(fw, mode):
                        fast = b.stages(model, x, mode=mode)
                except Exception as e:  # noqa: BLE001 - a broken fast path is a failure, not a crash
                    errors[f"{mode_run(fw, mode)} at {size}"] = f"{type(e).__name__}: {e}"
                    continue
                assert kept is not None
                modes.add(mode_run(fw, mode), fast, kept)
                del fast
            del kept
            forget_compiled(model, x.shape)  # this size's graphs and buffers; one that serves any size stays
            release()  # before the next framework, whose threads allocate from other heaps
        del ref
    if not stages.shapes:
        return None
    return SizeReport(size, spec.aux_admits(p, size), stages.rows(), modes.rows())


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 << 20


def map_large_blocks() -> None:
    """Have glibc serve every block of 4 MB or more from its own mapping, returned to the
    OS when freed. By default the threshold grows with each large block freed (up to 32
    MB), after which tensors land in the heaps and fragment them. Measured on ``check
    --train --variant googlenet_bn``: peak 2.18 -> 2.04 GB at the same time; at 1 MB 1.97
    GB but 5-13% slower (page faults for every activation), at 16 MB 2.11 GB.
    Process-wide, and harmless beyond the check: a few more mappings."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to set
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> None:
    """Return what was freed to the OS. Frameworks free tensors into glibc's heaps (one
    per thread), which keep them for reuse by the same thread: without a trim what one
    framework freed stays resident while the next (other threads) allocates its own,
    and the check's peak becomes the sum of theirs."""
    gc.collect()  # models in reference cycles (Keras layers, cached graphs)
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


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
            if not is_judge(b):
                report.counts[fw] = tuple(b.count_params(model))  # type: ignore[assignment]
        except Exception as e:  # noqa: BLE001 - one framework's failure must not hide the others' results
            report.errors[fw] = f"{type(e).__name__}: {e}"
    # Frameworks first: the first that runs is the reference, a judge never is.
    models = {fw: m for fw, m in sorted(models.items(), key=lambda item: is_judge(backends[item[0]]))}
    for size in sizes if models else ():
        reason = inadmissible(name, size)
        if reason:
            report.skipped_sizes[size] = reason
            continue
        x = _input(p, size, batch, seed)
        checked = _check_size(p, size, x, backends, models, timer, report.errors, report.unsupported)
        if checked is not None:
            report.sizes.append(checked)
    frameworks = {fw: m for fw, m in models.items() if not is_judge(backends[fw])}
    for fw, model in frameworks.items():  # canonical -> framework -> canonical
        with timer(fw, "roundtrip"):
            report.roundtrip[fw] = identical(params, backends[fw].to_canonical(model))
    if len(frameworks) > 1:  # torch -> keras -> mxnet -> torch, through each adapter
        chain = [*frameworks, next(iter(frameworks))]
        current = params
        for fw in chain:
            with timer(fw, "roundtrip"):
                backends[fw].from_canonical(frameworks[fw], current)
                current = backends[fw].to_canonical(frameworks[fw])
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
without_dropout = spec.without_dropout  # where the tests and check --distributed look for it


def _train(
    backend: Backend,
    p: spec.Plan,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    timer: Timer,
    fw: str,
    dtype: str = TRAIN_DTYPE,
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Every quantity of two SGD steps from ``params``, by canonical key, each as soon as
    it exists (so it can be compared and dropped)."""
    with timer(fw, "build"):
        model = backend.build(p.variant, **p.options.asdict(), dtype=dtype)
        backend.from_canonical(model, params)
    trainer = backend.Trainer(model, lr=TRAIN_LR, momentum=TRAIN_MOMENTUM, record=True)
    loss = {}
    for step in range(1, TRAIN_STEPS + 1):
        with timer(fw, "train"):
            loss[f"step {step}"] = np.array([trainer.step(x, y)[0]])
        if step == 1:
            yield "gradients", trainer.gradients()
            if p.variant.convs.norm is not None:
                yield "batch statistics", trainer.batch_stats()
        weights = backend.to_canonical(model)
        stats = {k: weights.pop(k) for k in list(weights) if k.endswith(("running_mean", "running_var"))}
        yield f"weights after step {step}", weights
        if stats:
            yield f"running statistics after step {step}", stats
        del weights, stats  # not held through the next step
    yield "loss", loss


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
    p = spec.resolve(spec.without_dropout(spec.variant(report.variant)), **report.options)
    params = random_params(p, seed, training=True)
    size = p.input_size
    x = _input(p, size, batch, seed).astype(dtype)
    y = np.random.default_rng([seed, size, 1]).integers(0, p.num_classes, batch)
    ref: dict[str, Kept] = {}  # the first framework that trains is the reference: its quantities
    results: dict[str, dict[str, tuple[str, Agreement]]] = {}  # quantity -> framework -> worst key
    trained = 0
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        for fw, b in backends.items():
            if is_judge(b):  # inference only
                continue
            mine: dict[str, tuple[str, Agreement]] = {}
            try:
                for quantity, values in _train(b, p, params, x, y, timer, fw, dtype):
                    if not trained:
                        ref[quantity] = Kept(values, Path(tmp))
                    elif quantity in ref:
                        scales = zero_gradients(p) if quantity == "gradients" else {}
                        mine[quantity] = _train_row(quantity, ref[quantity], values, scales)
                    del values  # before the next step: a copy of every weight (107 MB at googlenet in float64)
            except Exception as e:  # noqa: BLE001 - a broken port may fail to train at all: report it
                report.errors[f"{fw} training"] = f"{type(e).__name__}: {e}"
                if not trained:
                    ref.clear()
                continue
            for quantity in ref.keys() - mine.keys() if trained else ():  # the reference has it, fw not
                mine[quantity] = _train_row(quantity, ref[quantity], {}, {})
            for quantity, row in mine.items():
                results.setdefault(quantity, {})[fw] = row
            trained += 1
            release()
        if trained < 2:
            return
        for quantity in sorted(ref, key=lambda q: q != "loss"):  # the loss first, as the steps ran
            rows = results[quantity]
            worst = {fw: w for fw, (w, _) in rows.items()}
            agree = {fw: a for fw, (_, a) in rows.items()}
            passed = all(a.passed for a in agree.values())
            report.training.append(TrainRow(quantity, len(ref[quantity]), worst, agree, passed))


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
    reports = []
    map_large_blocks()
    # What exists now (the frameworks' half a million objects) is left out of the garbage
    # collections release() makes, which then take milliseconds instead of 0.3 s each.
    gc.freeze()
    try:
        for v in variants:
            reports.append(check_variant(v, backends, sizes or default_sizes(v), batch, seed, timer))
            release()
        # Training after all inference: float64 training leaves each framework a larger
        # working set, which would stand under the largest inference (googlenet_cifar at 239).
        for r in reports if train else ():
            check_training(r, backends, batch, seed, timer)
            release()
    finally:
        gc.unfreeze()
    return Report(
        {fw: b.version() for fw, b in backends.items()},
        dict(skipped),
        next((fw for fw, b in backends.items() if not is_judge(b)), None),
        batch,
        seed,
        REL_TOL,
        reports,
        timer.seconds,
        {fw: list(b.MODES) for fw, b in backends.items() if not is_judge(b)},
        [fw for fw, b in backends.items() if is_judge(b)],
    )
