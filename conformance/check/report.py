"""Render a check report: a terminal table and a JSON document."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import textwrap
from pathlib import Path

from ..files import atomic_write, finite
from .compare import Agreement, percent
from .results import Report, SizeReport, StageRow, TrainRow, VariantReport
from .training import TRAIN_DTYPE, TRAIN_LR, TRAIN_MOMENTUM

WIDTH = 100  # columns the report fits by default: a terminal's, and a CI log's
CELL = 18  # one run's "max abs   max rel" pair
STAGE, SHAPE, SHAPES = 12, 17, 6


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "x".join(map(str, s))


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """Free text (a header, a reason a size was skipped) wrapped to the width, each
    further line under the first's text."""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [text]


def _items(lead: str, items: list[str], width: int) -> list[str]:
    """Items after a lead, two spaces apart, a line broken only between items."""
    lines: list[str] = []
    line, fresh = lead, True
    for item in items:
        if not fresh and len(line) + 2 + len(item) > width:
            lines.append(line)
            line, fresh = "   ", True
        line += (" " if fresh else "  ") + item
        fresh = False
    return [*lines, line]


def _groups(names: list[str], width: int, fixed: int) -> list[list[str]]:
    """The compared runs in groups whose cells fit the width beside the fixed columns
    (at least one a group): a narrow terminal gets the same table once per group."""
    per = max(1, (width - fixed) // (CELL + 2))
    return [names[i : i + per] for i in range(0, len(names), per)] or [[]]


def _passed(row: StageRow, runs: list[str]) -> bool:
    """The row's verdict for the runs shown: the whole row's where every run is shown,
    else theirs alone (each agreeing with the reference, in the expected shape)."""
    if set(runs) >= set(row.agreement):
        return row.passed
    reference = next(iter(row.shapes))
    shown = [reference, *runs]
    agreed = all((a := row.agreement.get(fw)) is not None and a.passed for fw in runs)
    return agreed and all(row.shapes.get(fw) == row.expected for fw in shown)


def _stage_lines(row: StageRow, runs: list[str]) -> list[str]:
    shapes = (
        "same"
        if all(s == row.expected for s in row.shapes.values())
        else "; ".join(f"{fw} {_shape(s)}" for fw, s in row.shapes.items() if s != row.expected)
    )
    agreements = [row.agreement.get(fw) for fw in runs]
    cells = [f"{a.max_abs:8.1e}  {a.max_rel:8.1e}" if a else f"{'-':>{CELL}}" for a in agreements]
    lead = f"    {row.stage:<{STAGE}} {_shape(row.expected):<{SHAPE}} {shapes:<{SHAPES}}"
    lines = [f"{lead}  {'  '.join(cells)}   {_mark(_passed(row, runs))}"]
    if any(a is not None and a.top1 is not None for a in agreements):
        topk = [f"{_topk(a):>{CELL}}" for a in agreements]
        lines.append(f"    {'':<{STAGE}} {'':<{SHAPE}} {'':<{SHAPES}}  {'  '.join(topk)}".rstrip())
    return lines


def _topk(a: Agreement | None) -> str:
    if a is None or a.top1 is None or a.top5 is None:
        return ""
    ties = f" ({a.ties} tied)" if a.ties else ""
    return f"top-1/5 {percent(a.top1)}/{percent(a.top5)}{ties}"


def _table(rows: list[StageRow], runs: list[str], versus: str, width: int) -> list[str]:
    lines: list[str] = []
    lead = 4 + STAGE + 1 + SHAPE + 1 + SHAPES
    for group in _groups(runs, width, lead + len("   PASS")):
        names = "  ".join(f"{fw:^{CELL}}" for fw in group)
        cols = "  ".join(f"{'max abs   max rel':>{CELL}}" for _ in group)
        lines.append(f"    {'':<{STAGE}} {'':<{SHAPE}} {'':<{SHAPES}}  {names}   vs {versus}")
        lines.append(f"    {'stage':<{STAGE}} {'expected shape':<{SHAPE}} {'shapes':<{SHAPES}}  {cols}")
        lines += [line for r in rows for line in _stage_lines(r, group)]
    return lines


def _size_block(s: SizeReport, has_aux: bool, width: int) -> list[str]:
    head = f"  input {s.size} x {s.size}"
    if has_aux and not s.aux:
        head += " (aux heads skipped: their pool does not give the map fc1 expects at this size)"
    reference, *others = s.stages[0].shapes  # runs in order: the first is what the others are compared with
    lines = [*_wrap(head, width, "    "), *_table(s.stages, others, reference, width)]
    if s.modes:
        lines.append(f"  input {s.size} x {s.size}, each framework's fast modes against its own eager run")
        lines += _table(s.modes, list(s.modes[0].shapes), "eager", width)
    return lines


def _key(key: str, room: int) -> str:
    """A worst key cut in the middle to the room it has (the JSON keeps it whole)."""
    if len(key) <= room:
        return key
    keep = max(room - 3, 2)
    return key[: keep - keep // 2] + "..." + key[len(key) - keep // 2 :]


def _train_block(rows: list[TrainRow], reference: str, width: int) -> list[str]:
    lines = _wrap(
        f"  training step ({TRAIN_DTYPE}, SGD lr {TRAIN_LR} momentum {TRAIN_MOMENTUM}, dropout off, own input size)",
        width,
        "    ",
    )
    quantity = max(len(r.quantity) for r in rows)
    lead = 4 + quantity + 1 + 5 + 2 + 8 + 2 + 8 + 2
    longest = max(len(key) for r in rows for key in r.worst.values())
    room = max(min(width - lead - len("   PASS"), longest), len("worst key"))
    for fw in rows[0].agreement:
        lines.append(f"    {fw} vs {reference}")
        lines.append(f"    {'quantity':<{quantity}} {'keys':>5}  {'max abs':>8}  {'max rel':>8}  worst key")
        for r in rows:
            a = r.agreement[fw]
            cell = f"{a.max_abs:8.1e}  {a.max_rel:8.1e}  {_key(r.worst[fw], room):<{room}}"
            lines.append(f"    {r.quantity:<{quantity}} {r.keys:>5}  {cell}   {_mark(a.passed)}")
    return lines


def _variant_block(v: VariantReport, reference: str | None, width: int) -> list[str]:
    options = ", ".join(f"{k}={val}" for k, val in v.options.items())
    lines = [f"{v.variant}  ({options})"]
    lines.append(f"  {'parameters':<14}" + "".join(f"{k:>14}" for k in v.counts))
    for i, label in enumerate(("trainable", "statistics")):
        values = [c[i] for c in v.counts.values()]
        ok = all(x == values[0] for x in values)
        lines.append(f"    {label:<12}" + "".join(f"{x:>14,}" for x in values) + f"   {_mark(ok)}")
    for fw, err in v.errors.items():
        lines += _wrap(f"  {fw}: FAIL {err}", width, "    ")
    if v.roundtrip:
        trips = [
            f"{k} {_mark(not bad)}" + (f" ({', '.join(bad[:3])})" if bad else "") for k, bad in v.roundtrip.items()
        ]
        lines += _items("  round trip (bit-identical):", trips, width)
    for s in v.sizes:
        lines += _size_block(s, bool(v.options.get("aux_logits")), width)
    for size, why in v.skipped_sizes.items():
        lines += _wrap(f"  input {size} x {size}: skipped, {why}", width, "    ")
    for run, why in v.unsupported.items():
        lines += _wrap(f"  {run}: skipped, {why}", width, "    ")
    if v.training:
        lines += _train_block(v.training, reference or "-", width)
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


def columns(wide: bool) -> int:
    """The width to render for: unlimited when asked, else the terminal's where it is
    wider than :data:`WIDTH`, else :data:`WIDTH` (a pipe or a CI log too)."""
    if wide:
        return sys.maxsize
    if sys.stdout.isatty():
        return max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    return WIDTH


def render(r: Report, width: int = WIDTH) -> str:
    """The report as text fitting ``width`` columns: tables repeat for the runs that do
    not fit beside each other, free text wraps; every figure is also in the JSON."""
    versions = " | ".join(
        f"{v}" + (" (reference)" if fw == r.reference else "") for fw, v in r.frameworks.items() if fw not in r.judges
    )
    lines = ["GoogLeNet conformance check", *_wrap(f"  frameworks: {versions or 'none'}", width, " " * 14)]
    lines += [line for fw in r.judges for line in _wrap(f"  judge:      {fw}: {r.frameworks[fw]}", width, " " * 14)]
    if r.modes:
        lines.append("  modes:      default first; each checked against its framework's eager run")
        lines += [f"              {fw}: {', '.join(modes)}" for fw, modes in r.modes.items()]
    for fw, why in r.skipped.items():
        reason, _, hint = why.partition("; install with: ")
        lines += _wrap(f"  skipped:    {fw}: {reason}", width, " " * 14)
        if hint:  # a command on a line of its own, never broken, so it can be pasted
            lines.append(f"{' ' * 14}install with: {hint}")
    for text in (
        f"  weights:    seeded canonical (seed {r.seed}), shared by every framework",
        f"  inputs:     batch {r.batch}, seeded standard normal, NCHW float32",
        f"  tolerance:  max relative error <= {r.rel_tol:.0e} (to the reference's largest "
        f"magnitude); logits: identical top-1 and top-5",
    ):
        lines += _wrap(text, width, " " * 14)
    lines.append("")
    for v in r.variants:
        lines += [*_variant_block(v, r.reference, width), ""]
    for fw, phases in r.timings.items():
        timed = ", ".join(f"{ph} {s:.1f}" for ph, s in phases.items())
        lines += _wrap(f"  time: {fw} {sum(phases.values()):.1f} s ({timed})", width, " " * 8)
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
    doc = finite(dataclasses.asdict(r))
    assert isinstance(doc, dict)
    doc["passed"] = r.passed
    doc["checks"], doc["failed"] = count_checks(r)
    return doc


def write_json(r: Report, path: str | Path, overwrite: bool = False) -> Path:
    data = json.dumps(to_json(r), indent=1, allow_nan=False).encode()
    return atomic_write(path, data, overwrite=overwrite)
