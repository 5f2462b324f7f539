"""``check --distributed``: data-parallel training in each framework's own engine
computes what one process computes.

Without BatchNorm, N workers with b images each for k SGD steps must equal one process
with the global batch of N*b: the loss of every step, every gradient of the first
step, every weight after the last, in each framework (against its own single-process
run) and across the three (against the reference framework's distributed run), in
float64 as ``check --train`` runs.

With BatchNorm the workers do not compute what one process does: each normalises its
shard with its own statistics unless BatchNorm is synchronised, and the running
statistics follow each engine's rule (``impl_*.distributed.BATCHNORM``, found in its
source). Each replica's batch and running statistics after one step are asserted
against NumPy, which combines per-shard batch statistics (from single-process runs on
each shard) by the engine's stated rule. Synchronised BatchNorm is run where the
engine has it on this device; where it has not, the report says so.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import spec
from ..canonical import canonical_shapes, random_params
from ..interface import Backend, Unsupported, is_judge
from ..progress import Steps
from ..world import World
from . import distributed_runs as runs
from .compare import REL_TOL, Agreement
from .replica_statistics import bn_counts, expected_statistics, replica_results, stated_rule
from .training import TRAIN_DTYPE, train_row, zero_gradients

WORKERS = 2
PER_WORKER = 2  # images per worker: the global batch is WORKERS * PER_WORKER
STEPS = 2  # the second step is the first that the momentum buffer changes
# Without BatchNorm (the parity that must hold exactly), then with it (the rules).
VARIANTS = ("googlenet_d2l", "googlenet", "googlenet_lrn")
BATCHNORM_VARIANTS = ("googlenet_bn",)


SMALL = 32  # the size to start from: parity does not depend on it, and every worker steps the model


def default_size(variant: str) -> int:
    """A small size the variant admits: the smallest at or above ``SMALL``, else (a
    variant that runs only below it, as the MNIST nets' 28-31) the largest it admits."""
    ranges = spec.admitted(spec.resolve(variant))
    if not ranges:
        raise spec.SpecError(f"variant {variant!r}: no square input size runs it")
    return next((max(lo, SMALL) for lo, hi in ranges if hi >= SMALL), ranges[-1][1])


@dataclass
class Row:
    quantity: str  # "loss", "gradients", "weights after step 2", "running statistics", ...
    compared: str  # "2 workers vs 1 process" or "keras vs torch"
    keys: int
    worst: str
    agreement: Agreement
    passed: bool


@dataclass
class Case:
    framework: str
    variant: str
    size: int
    workers: int
    per_worker: int
    dtype: str
    rule: dict[str, str] = field(default_factory=dict)  # the engine's BatchNorm rule, as it states it
    gradients: dict[str, str] = field(default_factory=dict)  # how the engine reduces gradients
    synchronized: bool = False
    rows: list[Row] = field(default_factory=list)
    error: str | None = None  # the run failed, or the engine cannot (Unsupported)
    unsupported: bool = False

    @property
    def passed(self) -> bool:
        return self.unsupported or (self.error is None and all(r.passed for r in self.rows))


def _part(values: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}


def parity_rows(
    p: spec.Plan, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], compared: str, steps: int
) -> list[Row]:
    """Loss, first-step gradients and final weights, key by key (unordered keys, no sorting
    of values: each tensor against the tensor of the same name)."""
    rows = []
    for quantity, prefix, scales in (
        ("loss", "loss/", {}),
        ("gradients of step 1", "gradients/", zero_gradients(p)),
        (f"weights after step {steps}", "weights/", {}),
    ):
        a, b = _part(ref, prefix), _part(got, prefix)
        worst, agree = train_row(quantity, a, b, scales)
        rows.append(Row(quantity, compared, len(a), worst, agree, agree.passed))
    return rows


# -- aux heads the size does not admit ----------------------------------------------------

RUNNING = ("running_mean", "running_var", "num_batches_tracked")  # statistics, not trained


def resting_keys(p: spec.Plan, size: int) -> list[str]:
    """The trainable canonical keys of aux heads that are built but not admitted at this
    size: outside the loss, they have no gradient, and no engine may update them."""
    if not p.aux or spec.aux_admits(p, size):
        return []
    heads = tuple(f"{head.name}." for head in p.aux)
    return sorted(k for k in canonical_shapes(p) if k.startswith(heads) and not k.endswith(RUNNING))


def resting_rows(
    p: spec.Plan, size: int, params: Mapping[str, np.ndarray], results: Sequence[Mapping[str, np.ndarray]]
) -> list[Row]:
    """Per process: the aux heads the size does not admit got no gradient (no key) and
    kept their weights to the bit after every step (any SGD update, even of a zero
    gradient with momentum left from an earlier step, changes bits)."""
    keys = resting_keys(p, size)
    rows = []
    for rank, values in enumerate(results if keys else ()):
        graded = [k for k in keys if f"gradients/{k}" in values]
        moved = {k: float(np.max(np.abs(values[f"weights/{k}"] - params[k]))) for k in keys}
        worst = max(moved, key=lambda k: moved[k])
        scale = max(float(np.max(np.abs(params[k]))) for k in keys)
        agree = Agreement(moved[worst], moved[worst] / scale, passed=not graded and moved[worst] == 0.0)
        what = f"{graded[0]} has a gradient" if graded else worst
        rows.append(
            Row(f"aux not admitted, worker {rank}", "no gradient, unchanged", len(keys), what, agree, agree.passed)
        )
    return rows


# -- BatchNorm ---------------------------------------------------------------------------


def statistics_rows(
    expected: Mapping[str, Sequence[Mapping[str, np.ndarray]]], got: Sequence[Mapping[str, np.ndarray]], rule: str
) -> list[Row]:
    """Each replica's statistics of each step against NumPy's (step 1's batch statistics
    against the per-shard runs; running statistics against the rule)."""
    rows = []
    for quantity, replicas in expected.items():
        kind, step = quantity.split("/")
        if kind == "batch statistics" and step != "step 1":
            continue  # the replicas' own record: what NumPy computed the running statistics from
        for r, want in enumerate(replicas):
            have = _part(got[r], f"{quantity}/{r}/")
            worst, agree = train_row(kind, want, have, {})
            rows.append(Row(f"{kind} of replica {r}, {step}", f"NumPy, {rule}", len(want), worst, agree, agree.passed))
    return rows


def check_batchnorm(
    backend: Backend,
    case: Case,
    p: spec.Plan,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    rule: Mapping[str, str],
    engine_results: Callable[[], list[dict[str, np.ndarray]]],
) -> None:
    """Two steps with BatchNorm: each replica's statistics against NumPy by ``rule`` (two:
    DDP's rank-0 rule shows only from the second step on). ``engine_results``: the engine's
    results, asked for after the single-process runs (it may be running meanwhile)."""
    world = World(case.workers)
    bounds = [world.bounds(len(x), r) for r in range(case.workers)]
    if case.synchronized:
        # Synchronised, the replicas compute what one process computes on the global batch
        # (N*b parity); past the first BatchNorm, per-shard runs would see other inputs.
        whole = runs.single(backend, p, params, x, y, STEPS)
        shards = [_part(whole, "batch statistics/")] * case.workers  # pooled: the global batch's
    else:
        shards = [_part(runs.single(backend, p, params, x[a:b], y[a:b], 1), "batch statistics/") for a, b in bounds]
    raw = engine_results()
    if case.synchronized:
        case.rows += parity_rows(p, whole, raw[0], f"{case.workers} workers vs 1 process", STEPS)
    case.rows += resting_rows(p, case.size, params, raw)
    results = replica_results(raw)
    recorded = [
        [_part(results[r], f"batch statistics/step {s}/{r}/") for r in range(case.workers)] for s in range(2, STEPS + 1)
    ]
    sizes = [b - a for a, b in bounds]
    expected = expected_statistics(p, params, shards, sizes, bn_counts(p, case.size), rule, recorded)
    when = f" ({rule['when']})" if rule.get("when") else ""
    case.rows += statistics_rows(expected, results, f"batch per {rule['batch']}, running {rule['running']}{when}")


# -- the check ---------------------------------------------------------------------------


def engine(framework: str) -> Any:
    from ..train.worker import engine_of

    return engine_of(framework)


def inputs(
    variant: str, size: int, workers: int, seed: int
) -> tuple[spec.Plan, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The plan, canonical weights and global batch every run of a case starts from."""
    p = runs.plan(variant)
    params = random_params(p, seed, training=True)
    x, y = runs.batch(p, size, workers * PER_WORKER, seed, TRAIN_DTYPE)
    return p, params, x, y


def check_framework(
    framework: str,
    backend: Backend,
    variant: str,
    size: int,
    workers: int,
    seed: int,
    trainer: str | None = None,
    synchronized: bool = False,
    rule: Mapping[str, str] | None = None,
    engines: runs.Engines | None = None,
) -> tuple[Case, list[dict[str, np.ndarray]]]:
    """One framework, one variant: the distributed run against its own single process (no
    BatchNorm), or its replicas' statistics against NumPy (BatchNorm). ``rule``: assert
    this BatchNorm rule instead of the engine's; ``trainer``: step the workers with the
    class this ``"module:callable"`` makes of the engine's Trainer (negative controls);
    ``engines``: where :func:`run` started this case's engine run ahead."""
    eng = engine(framework)
    p, params, x, y = inputs(variant, size, workers, seed)
    case = Case(
        framework,
        variant,
        size,
        workers,
        PER_WORKER,
        TRAIN_DTYPE,
        dict(eng.BATCHNORM),
        dict(eng.GRADIENTS),
        synchronized,
    )

    def engine_results() -> list[dict[str, np.ndarray]]:
        started = engines.results(case_key(case, seed)) if engines is not None and trainer is None else None
        if started is None:
            started = runs.distributed(framework, p, params, x, y, STEPS, workers, trainer, synchronized)
        return started

    results: list[dict[str, np.ndarray]] = []
    try:
        if p.variant.convs.norm is not None:
            stated = stated_rule(rule or eng.BATCHNORM, synchronized)
            check_batchnorm(backend, case, p, params, x, y, stated, engine_results)
        else:
            ref = runs.single(backend, p, params, x, y, STEPS)
            results = engine_results()
            case.rows += parity_rows(p, ref, results[0], f"{workers} workers vs 1 process", STEPS)
            case.rows += resting_rows(p, size, params, results)
    except Unsupported as e:
        case.error, case.unsupported = str(e), True
    except Exception as e:  # noqa: BLE001 - a broken engine may fail to run at all: report it
        case.error = f"{type(e).__name__}: {e}"
    return case, results


def case_key(case: Case, seed: int) -> Hashable:
    """What tells one engine run from another in :func:`run`: every input of
    :func:`engine_run` (a negative control's ``trainer`` or ``rule`` is never started ahead)."""
    return (case.framework, case.variant, case.size, case.workers, seed, case.synchronized)


def engine_run(case: Case, seed: int, stop: threading.Event) -> list[dict[str, np.ndarray]]:
    """``case``'s engine run, from the inputs :func:`check_framework` computes for it."""
    p, params, x, y = inputs(case.variant, case.size, case.workers, seed)
    return runs.distributed(case.framework, p, params, x, y, STEPS, case.workers, None, case.synchronized, stop)


ENGINES_AT_ONCE = 2  # engine runs under way while this process computes single-process runs


def run(
    backends: Mapping[str, Backend],
    variants: list[str] | None = None,
    sizes: Mapping[str, int] | None = None,
    workers: int = WORKERS,
    seed: int = 0,
    progress: Steps | None = None,
) -> list[Case]:
    """Every framework on every variant; then each framework's distributed run against
    the reference framework's (the first), variant by variant. ``progress`` is told each case.

    The engines' runs (each its own processes) are started ahead, the synchronised
    BatchNorm ones first (Keras traces its synchronised BatchNorm for minutes on one
    core), the others in the report's order, while this process computes the
    single-process runs case by case; the report comes in the same order either way."""
    progress = Steps.silent() if progress is None else progress
    frameworks = [fw for fw, b in backends.items() if not is_judge(b)]
    todo = []
    for v in dict.fromkeys(variants or [*VARIANTS, *BATCHNORM_VARIANTS]):  # a variant named twice runs once
        size = (sizes or {}).get(v) or default_size(v)
        for fw in frameworks:
            for sync in (False, True) if spec.variant(v).convs.norm is not None else (False,):
                todo.append(Case(fw, v, size, workers, PER_WORKER, TRAIN_DTYPE, synchronized=sync))
    progress.total(len(todo))
    cases: list[Case] = []
    first: dict[str, tuple[str, dict[str, np.ndarray]]] = {}  # variant: the first engine's results
    with runs.Engines(ENGINES_AT_ONCE) as engines:
        for c in sorted(todo, key=lambda c: not c.synchronized):
            engines.start(case_key(c, seed), functools.partial(engine_run, c, seed))
        for c in todo:
            what = ", synchronised BatchNorm" if c.synchronized else ""
            progress(f"{c.variant} at {c.size}: {c.framework}, {workers} workers{what}")
            b = backends[c.framework]
            case, results = check_framework(
                c.framework, b, c.variant, c.size, workers, seed, synchronized=c.synchronized, engines=engines
            )
            cases.append(case)
            if results and c.variant in first:
                ref_fw, ref = first[c.variant]
                compared = f"{c.framework} vs {ref_fw}, both distributed"
                case.rows += parity_rows(runs.plan(c.variant), ref, results[0], compared, STEPS)
            elif results:
                first[c.variant] = (c.framework, results[0])
    return cases


def render(cases: list[Case]) -> str:
    lines = []
    for c in cases:
        what = f"{c.framework} {c.variant} at {c.size}, {c.workers} workers x {c.per_worker}, {c.dtype}"
        what += ", synchronised BatchNorm" if c.synchronized else ""
        if c.unsupported:
            lines.append(f"  {what}: not on this device: {c.error}")
            continue
        if c.error:
            lines.append(f"  {what}: FAIL: {c.error}")
            continue
        lines.append(f"  {what}: {'PASS' if c.passed else 'FAIL'}")
        for r in c.rows:
            a = r.agreement
            lines.append(
                f"    {r.quantity:<28} {r.compared:<34} {r.keys:>4} keys  max abs {a.max_abs:.1e}  "
                f"max rel {a.max_rel:.1e}  {'ok' if r.passed else 'FAIL'}  (worst {r.worst})"
            )
    return "\n".join(lines)


def rules(frameworks: list[str]) -> str:
    """Each engine's gradient reduction and BatchNorm rule, with its source."""
    lines = []
    for fw in frameworks:
        eng = engine(fw)
        bn, grads = eng.BATCHNORM, eng.GRADIENTS
        lines.append(f"  {fw}: {eng.ENGINE}")
        lines.append(f"    gradients: {grads['reduce']} across workers; {grads['detail']} ({grads['source']})")
        lines.append(
            f"    BatchNorm: batch statistics per {bn['batch']}, running statistics {bn['running']}; {bn['detail']} "
            f"({bn['source']})"
        )
    return "\n".join(lines)


def as_json(cases: list[Case]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) | {"passed": c.passed} for c in cases]


__all__ = ["REL_TOL", "WORKERS", "Case", "Row", "check_framework", "render", "rules", "run"]
