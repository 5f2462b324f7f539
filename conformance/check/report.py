"""Render a check report: a terminal table and a JSON document."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ..files import atomic_write
from .harness import TRAIN_DTYPE, TRAIN_LR, TRAIN_MOMENTUM, Report, SizeReport, StageRow, TrainRow, VariantReport


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "x".join(map(str, s))


def _stage_line(row: StageRow, others: list[str]) -> list[str]:
    shapes = (
        "same"
        if all(s == row.expected for s in row.shapes.values())
        else "; ".join(f"{fw} {_shape(s)}" for fw, s in row.shapes.items() if s != row.expected)
    )
    cells = [f"{a.max_abs:8.1e} {a.max_rel:8.1e}" if (a := row.agreement.get(fw)) else f"{'-':>17}" for fw in others]
    lines = [f"    {row.stage:<12} {_shape(row.expected):<17} {shapes:<6} {'   '.join(cells)}   {_mark(row.passed)}"]
    topk = [f"{fw} top-1 {a.top1:.0%}, top-5 {a.top5:.0%}" for fw, a in row.agreement.items() if a.top1 is not None]
    if topk:
        lines.append(f"    {'':<12} {'':<17} {'':<6} {'; '.join(topk)}")
    return lines


def _table(rows: list[StageRow], others: list[str], versus: str) -> list[str]:
    cols = "   ".join(f"{fw + ': max abs  max rel':>17}" for fw in others)
    lines = [f"    {'stage':<12} {'expected shape':<17} {'shapes':<6} {cols}   vs {versus}"]
    return lines + [line for r in rows for line in _stage_line(r, others)]


def _size_block(s: SizeReport, has_aux: bool) -> list[str]:
    head = f"  input {s.size} x {s.size}"
    if has_aux and not s.aux:
        head += "  (aux heads skipped: their pool does not give the map fc1 expects at this size)"
    reference, *others = s.stages[0].shapes  # runs in order: the first is what the others are compared with
    lines = [head, *_table(s.stages, others, reference)]
    if s.modes:
        lines.append(f"  input {s.size} x {s.size}, each framework's fast modes against its own eager run")
        lines += _table(s.modes, list(s.modes[0].shapes), "eager")
    return lines


def _train_block(rows: list[TrainRow], reference: str) -> list[str]:
    others = list(rows[0].agreement)
    width = max([len(k) + 19 for r in rows for k in r.worst.values()] + [len(fw) + 29 for fw in others])
    cols = "   ".join(f"{fw + ': max abs  max rel  worst key':<{width}}" for fw in others)
    lines = [
        f"  training step ({TRAIN_DTYPE}, SGD lr {TRAIN_LR} momentum {TRAIN_MOMENTUM}, dropout off, own input size)",
        f"    {'quantity':<32} {'keys':>5}  {cols}   vs {reference}",
    ]
    for r in rows:
        cells = "   ".join(
            f"{f' {a.max_abs:8.1e} {a.max_rel:8.1e}  {r.worst[fw]}':<{width}}" for fw, a in r.agreement.items()
        )
        lines.append(f"    {r.quantity:<32} {r.keys:>5}  {cells}   {_mark(r.passed)}")
    return lines


def _variant_block(v: VariantReport, reference: str | None) -> list[str]:
    options = ", ".join(f"{k}={val}" for k, val in v.options.items())
    lines = [f"{v.variant}  ({options})"]
    lines.append(f"  {'parameters':<14}" + "".join(f"{k:>14}" for k in v.counts))
    for i, label in enumerate(("trainable", "statistics")):
        values = [c[i] for c in v.counts.values()]
        ok = all(x == values[0] for x in values)
        lines.append(f"    {label:<12}" + "".join(f"{x:>14,}" for x in values) + f"   {_mark(ok)}")
    for fw, err in v.errors.items():
        lines.append(f"  {fw}: FAIL {err}")
    if v.roundtrip:
        trips = "  ".join(
            f"{k} {_mark(not bad)}" + (f" ({', '.join(bad[:3])})" if bad else "") for k, bad in v.roundtrip.items()
        )
        lines.append(f"  round trip (bit-identical): {trips}")
    for s in v.sizes:
        lines += _size_block(s, bool(v.options.get("aux_logits")))
    lines += [f"  input {size} x {size}: skipped, {why}" for size, why in v.skipped_sizes.items()]
    lines += [f"  {run}: skipped, {why}" for run, why in v.unsupported.items()]
    if v.training:
        lines += _train_block(v.training, reference or "-")
    return lines


def count_checks(r: Report) -> tuple[int, int]:
    """(checks run, checks failed)."""
    results: list[bool] = []
    for v in r.variants:
        results += [all(c[i] == v.counts["spec"][i] for c in v.counts.values()) for i in (0, 1)]
        results += [False] * len(v.errors)
        results += [not bad for bad in v.roundtrip.values()]
        results += [row.passed for s in v.sizes for row in s.stages + s.modes]
        results += [row.passed for row in v.training]
    return len(results), results.count(False)


def render(r: Report) -> str:
    versions = " | ".join(
        f"{v}" + (" (reference)" if fw == r.reference else "") for fw, v in r.frameworks.items() if fw not in r.judges
    )
    lines = ["GoogLeNet conformance check", f"  frameworks: {versions or 'none'}"]
    if r.judges:
        lines.append("  judges:     " + " | ".join(f"{fw}: {r.frameworks[fw]}" for fw in r.judges))
    if r.modes:
        lines.append(
            "  modes:      "
            + " | ".join(f"{fw} {', '.join(modes)}" for fw, modes in r.modes.items())
            + " (default first; each checked against its framework's eager run)"
        )
    lines += [f"  skipped:    {fw}: {why}" for fw, why in r.skipped.items()]
    lines += [
        f"  weights:    seeded canonical (seed {r.seed}), shared by every framework",
        f"  inputs:     batch {r.batch}, seeded standard normal, NCHW float32",
        f"  tolerance:  max relative error <= {r.rel_tol:.0e} (to the reference's largest "
        f"magnitude); logits: identical top-1 and top-5",
        "",
    ]
    for v in r.variants:
        lines += [*_variant_block(v, r.reference), ""]
    total = {fw: sum(p.values()) for fw, p in r.timings.items()}
    if total:
        lines.append(
            "  time: "
            + ", ".join(
                f"{fw} {t:.1f} s (" + ", ".join(f"{ph} {s:.1f}" for ph, s in r.timings[fw].items()) + ")"
                for fw, t in total.items()
            )
        )
    checks, failed = count_checks(r)
    if not r.frameworks:
        asked = ", ".join(r.skipped) or "none"
        lines.append(f"FAIL: no framework asked for is installed ({asked}), nothing was checked")
    elif r.passed:
        lines.append(f"PASS: all {checks} checks passed")
    else:
        lines.append(f"FAIL: {failed} of {checks} checks failed")
    return "\n".join(lines)


def to_json(r: Report) -> dict:
    doc = _finite(dataclasses.asdict(r))
    assert isinstance(doc, dict)
    doc["passed"] = r.passed
    doc["checks"], doc["failed"] = count_checks(r)
    return doc


def _finite(value: object) -> object:
    """Strict JSON has no NaN or Infinity: such errors are written as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(r: Report, path: str | Path, overwrite: bool = False) -> Path:
    data = json.dumps(to_json(r), indent=1, allow_nan=False).encode()
    return atomic_write(path, data, overwrite=overwrite)
