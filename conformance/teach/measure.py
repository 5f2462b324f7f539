"""Measure what each pitfall does: ``python -m conformance pitfalls``.

Inference pitfalls: the seeded canonical weights in a correct PyTorch port and in the
broken port, one batch of seeded images through both, every stage compared with
``check``'s rule (:mod:`conformance.teach.stages`). Training pitfalls: ``check
--train``'s two SGD steps (:func:`conformance.check.training.check_training`), the
first quantity that fails named with its step and worst tensor.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import spec
from ..canonical import random_params
from ..check import inputs, results, training
from ..check.compare import REL_TOL, percent
from ..files import atomic_write, finite
from ..interface import Backend
from ..reading import Damaged, json_document
from . import stages
from .pitfalls import PITFALLS, Pitfall, where

REFERENCE = "torch"  # the correct port every broken one is measured against
DEFAULT_BATCH = 64
MODEST_SIZE = 96  # inference pitfalls run here where the variant admits it and the mistake shows: fast
TRAIN_BATCH = inputs.DEFAULT_BATCH  # check --train's


@dataclass
class Point:
    """One stage (inference) or quantity (training) of the broken port against the correct one."""

    name: str
    max_abs: float | None  # None: the shapes differ
    max_rel: float | None
    passed: bool
    note: str = ""  # a shape that differs; the worst tensor of a training quantity


@dataclass
class Measurement:
    pitfall: str
    kind: str
    variant: str
    framework: str
    reference: str = REFERENCE
    size: int | None = None
    batch: int = 0
    where: str | None = None  # where the mistake is made (None: it changes nothing at this size)
    first: str | None = None  # the first stage or quantity that fails the tolerance
    first_rel: float | None = None
    first_note: str = ""
    logits_rel: float | None = None
    top1: float | None = None
    top5: float | None = None
    classes: int | None = None  # distinct top-1 classes of the reference over the batch
    points: list[Point] = field(default_factory=list)
    harmless_sizes: str = ""  # input sizes at which the mistake changes nothing
    skipped: str = ""  # why it was not measured
    error: str = ""  # the broken port could not run

    @property
    def as_expected(self) -> bool:
        """It was not measured, or the first divergence is where the mistake is made."""
        return bool(self.skipped or self.error) or self.first == self.where

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: _number(v) for k, v in d.items() if k in names and k != "points"}
        points = [Point(**{k: _number(v) for k, v in p.items()}) for p in d.get("points", [])]
        return cls(**values, points=points)


def _number(v: Any) -> Any:
    """JSON holds inf and NaN as strings."""
    return float(v) if v in ("inf", "-inf", "nan") else v


def default_size(pitfall: Pitfall, p: spec.Plan) -> int:
    """Inference: ``MODEST_SIZE`` where the variant runs it and the mistake shows there
    as at the variant's own size (or changes nothing at either); otherwise the variant's
    own size."""
    own = p.input_size
    if pitfall.kind == "training" or own <= MODEST_SIZE:
        return own
    try:
        spec.stage_shapes(p, MODEST_SIZE)
    except spec.SpecError:
        return own
    modest = where(pitfall, p, MODEST_SIZE)[0]
    # a mistake that changes nothing at the variant's own size is shown harmless where it is fast
    return MODEST_SIZE if modest is not None or where(pitfall, p, own)[0] is None else own


def harmless_sizes(pitfall: Pitfall, p: spec.Plan) -> list[int]:
    """The admitted input sizes at which the mistake changes nothing (from the spec)."""
    return [s for lo, hi in spec.admitted(p) for s in range(lo, hi + 1) if where(pitfall, p, s) == (None, None)]


def sizes_text(sizes: list[int]) -> str:
    """``61-62, 93-94, 125-126, ... (every 32 pixels, up to 1022)``, or the whole list."""
    ranges: list[list[int]] = []
    for s in sizes:
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in ranges]
    steps = {b[0] - a[0] for a, b in itertools.pairwise(ranges)}
    widths = {b - a for a, b in ranges}
    if len(ranges) > 4 and len(steps) == 1 and len(widths) == 1:
        return f"{', '.join(text[:3])}, ... (every {steps.pop()} pixels up to {ranges[-1][1]})"
    return ", ".join(text)


def _plan(variant: str) -> tuple[dict[str, Any], spec.Plan]:
    options = inputs.full_options(spec.VARIANTS[variant])
    return options, spec.resolve(variant, **options)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def measure(
    pitfall: Pitfall,
    variant: str,
    backends: Mapping[str, Backend],
    skipped: Mapping[str, str] | None = None,
    size: int | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
) -> Measurement:
    """What ``pitfall`` does to ``variant``: measured, or skipped with the reason."""
    options, p = _plan(variant)
    size = size or default_size(pitfall, p)
    m = Measurement(pitfall.name, pitfall.kind, variant, pitfall.framework, size=size)
    m.where, reason = where(pitfall, p, size)
    if reason:
        m.skipped = f"cannot apply to {variant}: {reason}"
        return m
    for fw in dict.fromkeys([REFERENCE, pitfall.framework]):
        if fw not in backends:
            m.skipped = f"{fw} is {(skipped or {}).get(fw, 'not installed')}"
            return m
    if pitfall.kind == "training":
        _measure_training(m, pitfall, options, backends, seed)
    else:
        m.batch = batch
        m.harmless_sizes = sizes_text(harmless_sizes(pitfall, p))
        _measure_inference(m, pitfall, options, p, backends, seed)
    return m


def _measure_inference(
    m: Measurement, pitfall: Pitfall, options: dict[str, Any], p: spec.Plan, backends: Mapping[str, Backend], seed: int
) -> None:
    assert m.size is not None
    params = random_params(p, seed)
    x = stages.seeded_input(p, m.size, m.batch, seed)
    ref = backends[REFERENCE]
    ref_model = ref.build(m.variant, **options)
    ref.from_canonical(ref_model, params)
    with pitfall.broken(backends[pitfall.framework]) as b:
        try:
            model = b.build(m.variant, **options)
            b.from_canonical(model, params)
            rows = stages.compare_runs(
                lambda c: ref.stages(ref_model, c), lambda c: b.stages(model, c), x, stages.logit_stages(p)
            )
        except Exception as e:  # noqa: BLE001 - a broken port may fail to run at all: that is what it does
            m.error = _error(e)
            return
    m.points = [Point(r.stage, r.max_abs, r.max_rel, r.passed, r.note) for r in rows]
    first = stages.first_divergence(rows)
    if first is not None:
        m.first, m.first_rel, m.first_note = first.stage, first.max_rel, first.note
    logits = next(r for r in rows if r.stage == "logits")
    m.logits_rel, m.top1, m.top5, m.classes = logits.max_rel, logits.top1, logits.top5, logits.classes


def _step(quantity: str, worst: str) -> str:
    if quantity == "loss":
        return worst  # "step 2"
    return quantity[quantity.index("step") :] if "step" in quantity else "step 1"


def _measure_training(
    m: Measurement, pitfall: Pitfall, options: dict[str, Any], backends: Mapping[str, Backend], seed: int
) -> None:
    m.batch = TRAIN_BATCH
    report = results.VariantReport(m.variant, options, {}, {})
    fw = pitfall.framework
    with pitfall.broken(backends[fw]) as b:
        training.check_training(report, {REFERENCE: backends[REFERENCE], fw: b}, TRAIN_BATCH, seed, results.Timer())
    if report.errors:
        m.error = "; ".join(f"{who}: {why}" for who, why in report.errors.items())
        return
    m.points = [
        Point(r.quantity, r.agreement[fw].max_abs, r.agreement[fw].max_rel, r.passed, r.worst[fw])
        for r in report.training
    ]
    first = next((r for r in report.training if not r.passed), None)
    if first is not None:
        worst = first.worst[fw]
        m.first, m.first_rel = first.quantity, first.agreement[fw].max_rel
        m.first_note = f"{_step(first.quantity, worst)}, worst tensor {worst}" if first.quantity != "loss" else worst


def run(
    names: Iterable[str],
    variant: str | None,
    backends: Mapping[str, Backend],
    skipped: Mapping[str, str] | None = None,
    size: int | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    log: Callable[[Measurement], None] = lambda m: None,
) -> list[Measurement]:
    """Every named pitfall on ``variant``, or on each of its default variants."""
    out = []
    for name in names:
        pitfall = PITFALLS[name]
        for v in [variant] if variant else pitfall.variants:
            out.append(measure(pitfall, v, backends, skipped, size, batch, seed))
            log(out[-1])
    return out


def planned(names: Iterable[str], variant: str | None) -> list[tuple[str, str]]:
    """(pitfall, variant) pairs ``run`` measures."""
    return [(n, v) for n in names for v in ([variant] if variant else PITFALLS[n].variants)]


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def _rel(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _pct(v: float | None, batch: int) -> str:
    return "-" if v is None else f"{percent(v)} ({round(v * batch)} of {batch})"


def render(m: Measurement) -> str:
    pitfall = PITFALLS[m.pitfall]
    lines = [f"{m.pitfall}: {pitfall.title}"]
    if m.skipped:
        return "\n".join([*lines, f"  skipped: {m.skipped}"])
    if m.kind == "training":
        lines.append(
            f"  {m.framework} on {m.variant} at {m.size} x {m.size}, against {m.reference}: "
            f"check --train's {training.TRAIN_STEPS} SGD steps in {training.TRAIN_DTYPE}, batch {m.batch}"
        )
    else:
        lines.append(f"  {m.framework} on {m.variant} at {m.size} x {m.size}, against {m.reference}; {m.batch} images")
    if m.error:
        lines.append(f"  the broken port cannot run: {m.error}")
    elif m.first is None:
        lines.append(f"  no stage diverges{' (as expected at this size)' if m.where is None else ''}")
    else:
        here = "where the mistake is made" if m.first == m.where else f"the mistake is made at {m.where}"
        figure = m.first_note if m.first_rel is None else f"max rel {_rel(m.first_rel)}"
        label = "stage" if m.kind == "inference" else "quantity"
        where_exactly = f": {m.first_note}" if m.kind == "training" else ""  # step and worst tensor
        lines.append(f"  first divergent {label}: {m.first} ({here}){where_exactly}, {figure}")
        if m.kind == "inference":
            lines.append(
                f"  logits: max rel {_rel(m.logits_rel)}, top-1 agreement {_pct(m.top1, m.batch)}, "
                f"top-5 {_pct(m.top5, m.batch)}"
            )
            if m.classes is not None and m.classes < min(m.batch, 10):
                lines.append(
                    f"  (the seeded random weights give these {m.batch} images only {m.classes} top-1 "
                    f"class{'es' if m.classes > 1 else ''}, so top-5 says more than top-1)"
                )
        else:
            agree = [pt.name for pt in m.points if pt.passed]
            lines.append(f"  still agree: {', '.join(agree) or 'nothing'}")
    if m.harmless_sizes:
        lines.append(f"  changes nothing at input sizes {m.harmless_sizes}")
    lines += textwrap.wrap(f"why: {pitfall.why}", 110, initial_indent="  ", subsequent_indent="       ")
    return "\n".join(lines)


def header(backends: Mapping[str, Backend], batch: int, seed: int) -> str:
    ref = backends[REFERENCE].version() if REFERENCE in backends else f"{REFERENCE} (not installed)"
    return "\n".join(
        [
            "GoogLeNet porting pitfalls: each mistake made in a correct port, with the seeded weights and input shared",
            f"  reference: {ref}, correct; inputs: {batch} seeded standard-normal images (training: check --train's)",
            f"  tolerance: max relative error <= {REL_TOL:.0e} per stage, as check; logits: identical top-1 and top-5",
        ]
    )


def to_json(measured: list[Measurement], batch: int, seed: int) -> dict[str, Any]:
    return {
        "reference": REFERENCE,
        "batch": batch,
        "seed": seed,
        "rel_tol": REL_TOL,
        "pitfalls": [finite(m.to_dict()) for m in measured],
        "as_expected": all(m.as_expected for m in measured),
    }


def write_json(measured: list[Measurement], path: Path, batch: int, seed: int, overwrite: bool = False) -> Path:
    data = json.dumps(to_json(measured, batch, seed), indent=1, allow_nan=False).encode()
    return atomic_write(path, data, overwrite=overwrite)


def read_json(path: Path, option: str) -> tuple[list[Measurement], int]:
    """(measurements, batch) written by ``pitfalls --json``; a ValueError naming ``option``
    and the file otherwise."""
    try:
        doc: Any = json_document(path)
        return [Measurement.from_dict(d) for d in doc["pitfalls"]], int(doc["batch"])
    except OSError as e:
        raise ValueError(f"{option} {path}: {e.strerror}") from None
    except Damaged as e:
        raise ValueError(f"{option} {path}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{option} {path}: not a pitfalls --json report ({type(e).__name__}: {e})") from None


def plot_name(m: Measurement) -> str:
    return f"{m.pitfall}-{m.variant}.png"


def plot(m: Measurement) -> bytes:
    """A PNG of the relative error at every stage (or quantity), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [pt.name for pt in m.points]
    rel = [pt.max_rel for pt in m.points]
    positive = [v for v in rel if v is not None and 0 < v < math.inf]
    low = min([*positive, REL_TOL]) / 10
    high = max([*positive, REL_TOL]) * 10
    # 640 x 420 pixels, shown unscaled on the page: its labels stay as legible as the text around them
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    xs = range(len(names))
    shown = [low if v == 0 else (high if v is None or not math.isfinite(v) else v) for v in rel]
    ax.plot(xs, shown, color="#1f5fa8", linewidth=1, zorder=1)
    for i, (v, pt) in enumerate(zip(rel, m.points, strict=True)):
        if v is None or not math.isfinite(v):
            ax.scatter(i, high, marker="x", color="#c0392b", zorder=3)
        elif v == 0:
            ax.scatter(i, low, marker="o", facecolors="white", edgecolors="#1f5fa8", zorder=3)
        else:
            ax.scatter(i, v, marker="o", color="#c0392b" if not pt.passed else "#1f5fa8", s=18, zorder=3)
    ax.axhline(REL_TOL, color="#888888", linestyle="--", linewidth=1)
    ax.text(len(names) - 0.5, REL_TOL * 1.3, f"tolerance {REL_TOL:.0e}", ha="right", va="bottom", fontsize=8)
    if m.where in names:
        i = names.index(m.where)
        ax.axvline(i, color="#e67e22", linestyle=":", linewidth=1.5)
        ax.text(i + 0.15, high / 1.5, "mistake made here", color="#e67e22", fontsize=8, va="top")
    ax.set_yscale("log")
    ax.set_ylim(low / 2, high * 2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("max relative error")
    notes = "open circles: bit-identical; x: shapes differ or not finite" if m.kind == "inference" else ""
    ax.set_title(f"{m.pitfall}: {m.framework} on {m.variant}" + (f" at {m.size}" if m.size else ""), fontsize=10)
    if notes:
        fig.text(0.01, 0.01, notes, fontsize=7, color="#555555")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_plot(m: Measurement, directory: Path, overwrite: bool = False) -> Path | None:
    if not m.points:
        return None
    return atomic_write(directory / plot_name(m), plot(m), overwrite=overwrite)
