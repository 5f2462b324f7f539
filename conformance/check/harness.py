"""The conformance check: one set of canonical weights, every installed framework.

For each variant: parameter counts (each framework's own API) against the spec,
bit-identical round trips, and, at each input size, every stage's shape against
the spec and its values against the reference framework (each framework's eager
mode, and any judge: ONNX Runtime on an exported graph), and every other mode of each
framework (its fast inference path) against that framework's own eager run.

Memory: each run's activations are compared as soon as they exist and then dropped,
and what a variant allocated is returned to the OS before the next (``release``), so
the peak is one variant's (one run per framework running at once), not the sum.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits, spec
from ..canonical import random_params
from ..interface import EAGER, MODE_SETS, Backend, Unsupported, checked_modes, forget_compiled, is_judge
from ..progress import Steps
from . import parallel
from .compare import REL_TOL, Agreement, agreement, identical
from .inputs import DEFAULT_BATCH, default_sizes, full_options, inadmissible, seeded_input
from .memory import StoredRun, map_large_blocks, release
from .results import Report, SizeReport, StageRow, Timer, VariantReport
from .training import check_training, step_work, training_plan


def compared(
    plan: spec.Plan, out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, tuple[int, ...]], dict[str, Agreement]]:
    """A run's (shapes, agreements with ``ref`` by stage); no agreements without a ``ref``."""
    heads = {"logits", *(h.name for h in plan.aux)}
    agree = {}
    for stage, got in out.items():
        want = None if ref is None else ref.get(stage)
        if want is not None and want.shape == got.shape:
            agree[stage] = agreement(want, got, logits=stage in heads)
    return {k: v.shape for k, v in out.items()}, agree


class StageTable:
    """One input size's stage table, built one run at a time: a run's activations are
    compared when they exist and can then be freed (a stage of googlenet_cifar at --input-size 239 is
    84 MB), instead of every framework's being held until the end."""

    def __init__(self, plan: spec.Plan, size: int, batch: int) -> None:
        self.plan = plan
        self.expected = spec.expected_shapes(plan, size, batch)
        self.names: dict[str, None] = dict.fromkeys(self.expected)
        self.shapes: dict[str, dict[str, tuple[int, ...]]] = {}  # run -> stage -> shape
        self.agree: dict[str, dict[str, Agreement]] = {}  # stage -> run -> agreement

    def add(self, run: str, out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray] | None) -> None:
        """Record a run's shapes and compare it with ``ref`` (None: it is the reference)."""
        self.record(run, *compared(self.plan, out, ref))

    def record(self, run: str, shapes: Mapping[str, tuple[int, ...]], agree: Mapping[str, Agreement]) -> None:
        """Record a run compared already (:func:`compared`)."""
        self.names.update(dict.fromkeys(shapes))
        self.shapes[run] = dict(shapes)
        for stage, agreed in agree.items():
            self.agree.setdefault(stage, {})[run] = agreed

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


def _listed_modes(b: Backend, modes: str) -> list[str]:
    """The report's list: the modes checked and eager, the default first."""
    return [m for m in b.MODES if m == EAGER or m in checked_modes(b, modes)]


def mode_run(fw: str, mode: str) -> str:
    """How a framework's mode is named in the report: ``torch channels_last``."""
    return f"{fw} {mode}"


@dataclasses.dataclass
class _Runs:
    """One framework's runs at one size: its own stages (kept, to compare with the
    reference), each other mode compared with them already, and what failed or cannot
    run, by the report's name for it."""

    own: StoredRun | None = None
    modes: dict[str, tuple[dict[str, tuple[int, ...]], dict[str, Agreement]]] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)


def _framework_runs(
    plan: spec.Plan,
    size: int,
    x: np.ndarray,
    b: Backend,
    model: Any,
    fw: str,
    modes_checked: str,
    timer: Timer,
    tmp: Path,
) -> _Runs:
    """``fw``'s own stages at ``size`` (a judge's own mode, else eager) and each checked
    mode against them; then what it compiled for this size is dropped."""
    runs = _Runs()
    own = b.MODES[0] if is_judge(b) else EAGER
    try:
        with timer(fw, f"{'forward' if own == EAGER else own} {size}"):
            out = b.stages(model, x, mode=own)
    except Unsupported as e:  # a judge whose exporter cannot: said, not failed
        runs.unsupported[f"{fw} at {size}"] = str(e)
        return runs
    except Exception as e:  # noqa: BLE001 - a broken port may fail to run at all: report it
        runs.errors[f"{fw} at {size}"] = f"{type(e).__name__}: {e}"
        return runs
    runs.own = StoredRun(out, tmp)
    del out
    for mode in checked_modes(b, modes_checked):
        release()
        run = mode_run(fw, mode)
        try:
            with timer(fw, f"{mode} {size}"):
                fast = b.stages(model, x, mode=mode)
        except Unsupported as e:  # a compiler that cannot run this variant or size: said, not failed
            runs.unsupported[f"{run} at {size}"] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - a broken fast path is a failure, not a crash
            runs.errors[f"{run} at {size}"] = f"{type(e).__name__}: {e}"
            continue
        runs.modes[run] = compared(plan, fast, runs.own)
        del fast
    # This size's graphs and buffers (one that serves any size stays), in the
    # framework's own process when it has one (processes.Child).
    getattr(b, "forget_compiled", forget_compiled)(model, x.shape)
    release()  # before the next framework, whose threads allocate from other heaps
    return runs


def _check_size(
    plan: spec.Plan,
    size: int,
    x: np.ndarray,
    backends: Mapping[str, Backend],
    models: Mapping[str, Any],
    timer: Timer,
    errors: dict[str, str],
    unsupported: dict[str, str],
    progress: Callable[[str], None],
    modes_checked: str = "default",
) -> SizeReport | None:
    """Every framework's eager stages (a judge's own) against the first that runs, and
    each of its other modes against its eager stages; None if nothing ran. Frameworks in
    processes of their own run at once (the slowest so far first), compared in order."""
    stages, modes = StageTable(plan, size, len(x)), StageTable(plan, size, len(x))
    ref: StoredRun | None = None
    names = list(models)
    # a worker still writing when a signal ends the check must not turn the one-line
    # interruption into a failed removal
    with tempfile.TemporaryDirectory(prefix="conformance-", ignore_cleanup_errors=True) as tmp:

        def work(fw: str) -> _Runs:
            progress(fw)  # as it starts: a log's last line names the framework that hangs
            return _framework_runs(plan, size, x, backends[fw], models[fw], fw, modes_checked, timer, Path(tmp))

        workers = parallel.at_once(backends, names, limits.Work(plan, size, len(x), size_option=None))
        with parallel.each(work, names, workers, parallel.longest_first(names, timer)) as done:
            for fw, runs in done:
                errors.update(runs.errors)
                unsupported.update(runs.unsupported)
                if runs.own is not None:
                    stages.add(fw, runs.own, ref)
                    ref = ref or runs.own
                for run, (shapes, agree) in runs.modes.items():
                    modes.record(run, shapes, agree)
                del runs
        del ref
    if not stages.shapes:
        return None
    return SizeReport(size, spec.aux_admits(plan, size), stages.rows(), modes.rows())


def _say(progress: Steps, where: str, framework: str) -> None:
    progress(f"{where}: {framework}")


def check_variant(
    name: str,
    backends: Mapping[str, Backend],
    sizes: tuple[int, ...] | list[int],
    batch: int,
    seed: int,
    timer: Timer,
    progress: Steps | None = None,
    modes: str = "default",
) -> VariantReport:
    progress = Steps.silent() if progress is None else progress
    progress(f"{name}: build and load")
    options = full_options(spec.VARIANTS[name])
    plan = spec.resolve(name, **options)
    params = random_params(plan, seed)
    report = VariantReport(name, options, {"spec": spec.count_params(plan)}, {})

    def build(fw: str) -> tuple[Any, tuple[int, int] | None] | str:
        b = backends[fw]
        try:
            with timer(fw, "build"):
                model = b.build(name, **options)
            with timer(fw, "load"):
                b.from_canonical(model, params)
            return model, None if is_judge(b) else tuple(b.count_params(model))  # type: ignore[return-value]
        except Exception as e:  # noqa: BLE001 - one framework's failure must not hide the others' results
            return f"{type(e).__name__}: {e}"

    models = {}
    names = list(backends)
    # Each framework builds, loads and later takes its round trip at the same time as
    # the others, where each has a process of its own, within what the machine holds.
    own_size = limits.Work(plan, plan.input_size, batch, size_option=None)
    workers = parallel.at_once(backends, names, own_size)
    with parallel.each(build, names, workers, parallel.longest_first(names, timer)) as built:
        for fw, result in built:
            if isinstance(result, str):
                report.errors[fw] = result
                continue
            models[fw], counts = result
            if counts is not None:
                report.counts[fw] = counts
    # Frameworks first: the first that runs is the reference, a judge never is.
    models = {fw: m for fw, m in sorted(models.items(), key=lambda item: is_judge(backends[item[0]]))}
    for size in sizes if models else ():
        reason = inadmissible(name, size)
        if reason:
            report.skipped_sizes[size] = reason
            continue
        x = seeded_input(plan, size, batch, seed)
        where = f"{name} at {size}"
        said = functools.partial(_say, progress, where)
        checked = _check_size(plan, size, x, backends, models, timer, report.errors, report.unsupported, said, modes)
        if checked is not None:
            report.sizes.append(checked)
    frameworks = {fw: m for fw, m in models.items() if not is_judge(backends[fw])}
    progress(f"{name}: round trips")

    def roundtrip(fw: str) -> list[str] | str:  # canonical -> framework -> canonical
        try:
            with timer(fw, "roundtrip"):
                return identical(params, backends[fw].to_canonical(frameworks[fw]))
        except Exception as e:  # noqa: BLE001 - a port (or its process) that fails here fails alone
            return f"{type(e).__name__}: {e}"

    names = list(frameworks)
    with parallel.each(roundtrip, names, workers, parallel.longest_first(names, timer)) as tripped:
        for fw, keys in tripped:
            if isinstance(keys, str):
                report.errors[f"{fw} round trip"] = keys
                del frameworks[fw]
            else:
                report.roundtrip[fw] = keys
    if len(frameworks) > 1:  # torch -> keras -> mxnet -> torch, through each adapter
        chain = [*frameworks, next(iter(frameworks))]
        current = params
        for fw in chain:
            with timer(fw, "roundtrip"):
                backends[fw].from_canonical(frameworks[fw], current)
                current = backends[fw].to_canonical(frameworks[fw])
        report.roundtrip[" -> ".join(chain)] = identical(params, current)
    return report


def _largest_first(variants: list[str], batch: int) -> list[str]:
    """``variants``, the one whose training step needs the most memory first."""

    def work(name: str) -> int:
        return step_work(training_plan(name, full_options(spec.VARIANTS[name])), batch).bytes

    return sorted(variants, key=lambda name: -work(name))


def run(
    variants: list[str],
    backends: Mapping[str, Backend],
    skipped: Mapping[str, str],
    sizes: tuple[int, ...] | list[int] | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    timer: Timer | None = None,
    train: bool = False,
    progress: Steps | None = None,
    modes: str = "default",
) -> Report:
    """The full check. ``backends`` maps a framework name to its implementation package
    (or any object with the same functions, e.g. a deliberately broken port). ``sizes``:
    None checks each variant at :func:`default_sizes`. ``train``: also the training
    parity (:func:`check_training`), at each variant's own size. ``progress`` is told
    each step: a variant's build, each size's framework, its round trips, its training.
    ``modes``: which of each framework's modes are compared with its eager run
    (:data:`MODE_SETS`)."""
    if modes not in MODE_SETS:
        raise ValueError(f"--modes: expected one of {', '.join(MODE_SETS)}, got {modes!r}")
    if batch < 1:
        raise ValueError(f"--batch: expected a positive integer, got {batch}")
    if train and batch < 2:
        raise ValueError("--batch: --train needs at least 2 images (BatchNorm's batch variance)")
    timer = timer or Timer()
    for fw, b in backends.items():  # a child's import of its framework, timed there
        imported = getattr(b, "import_seconds", None)
        if imported is not None:
            timer.seconds.setdefault(fw, {})["import"] = imported
    progress = Steps.silent() if progress is None else progress
    versions = {fw: b.version() for fw, b in backends.items()}  # asked first: a framework's process may die
    admitted = {v: [n for n in sizes or default_sizes(v) if not inadmissible(v, n)] for v in variants}
    steps = sum(2 + len(admitted[v]) * len(backends) + train for v in variants)
    progress.total(steps)
    reports = []
    map_large_blocks()
    # What exists now (the frameworks' half a million objects) is left out of the garbage
    # collections release() makes, which then need not walk them each time.
    gc.freeze()
    try:
        # Training before any inference, the largest first: the largest peak (Keras's
        # float64 step) then stands on a fresh process, and the rest, lower, on what it left.
        order = _largest_first(variants, batch) if train else []
        trained = {v: VariantReport(v, full_options(spec.VARIANTS[v]), {}, {}) for v in order}
        for v, r in trained.items():
            progress(f"{v}: one training step")
            check_training(r, backends, batch, seed, timer)
            release()
        for v in variants:
            report = check_variant(v, backends, sizes or default_sizes(v), batch, seed, timer, progress, modes)
            if v in trained:
                report.training = trained[v].training
                report.errors.update(trained[v].errors)
            reports.append(report)
            release()
    finally:
        gc.unfreeze()
    return Report(
        versions,
        dict(skipped),
        next((fw for fw, b in backends.items() if not is_judge(b)), None),
        batch,
        seed,
        REL_TOL,
        reports,
        timer.seconds,
        {fw: _listed_modes(b, modes) for fw, b in backends.items() if not is_judge(b)},
        [fw for fw, b in backends.items() if is_judge(b)],
    )
