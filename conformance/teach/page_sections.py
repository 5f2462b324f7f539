"""The page's other sections as HTML: the spec table of a variant, the differences
table with what its pitfalls measure, the pitfalls with their plots, and the latest
``check`` report and ``bench`` figures when given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .. import spec
from ..check.compare import REL_TOL, percent
from . import differences, measure
from .markup import esc, linkify, scientific, table, verdict
from .page_code import NAMES, markdown_cell
from .pitfalls import PITFALLS

PLOTS = "plots"  # the plots' directory, beside the index


def spec_section(variant: str, size: int | None) -> str:
    options = {"aux_logits": spec.VARIANTS[variant].aux is not None}
    p = spec.resolve(variant, **options)
    size = size or p.input_size
    shapes = spec.expected_shapes(p, size)
    counts = spec.layer_counts(p, size)
    owner = {p.fc.name: "logits"}
    per: dict[str, list[spec.LayerCount]] = {}
    for c in counts:
        first = c.name.split(".")[0]
        per.setdefault(owner.get(first, first), []).append(c)
    rows = [("input", " x ".join(map(str, (p.in_channels, size, size))), "", "", "")]
    for stage, shape in shapes.items():
        layers = per.get(stage, [])
        rows.append(
            (
                esc(stage),
                " x ".join(map(str, shape[1:])),
                f"{sum(c.params for c in layers):,}" if layers else "",
                f"{sum(c.stats for c in layers):,}" if layers and any(c.stats for c in layers) else "",
                f"{sum(c.macs for c in layers):,}" if layers else "",
            )
        )
    trainable, stats = spec.count_params(p)
    rows.append(
        ("<b>total</b>", "", f"<b>{trainable:,}</b>", f"<b>{stats:,}</b>", f"<b>{sum(c.macs for c in counts):,}</b>")
    )
    aux = "" if spec.aux_admits(p, size) or not p.aux else " (the aux heads do not run at this size)"
    return (
        f'<section id="spec"><h2>The spec: <code>{esc(variant)}</code> at {size} x {size}</h2>'
        f"<p>{esc(p.variant.description)}. Source: {linkify(esc(p.variant.source))}.</p>"
        f"<p>Output of every stage (one image), with the parameters, BatchNorm statistics and multiply-adds of "
        f"its layers{aux}, from <code>conformance.spec</code> alone: no framework imported. "
        f"<code>python -m conformance spec --variant {esc(variant)} --aux-logits</code> prints the same.</p>"
        + table(
            ["stage", "output (C x H x W)", "parameters", "BN statistics", "multiply-adds"], rows, "spec", (2, 3, 4)
        )
        + "</section>"
    )


def _classes(m: measure.Measurement) -> str:
    """How many top-1 classes the reference picks: few, with random weights."""
    if m.classes is None:
        return ""
    return f'<br><span class="where">{m.classes} class{"es" if m.classes > 1 else ""}</span>'


def _effect(m: measure.Measurement) -> str:
    if m.skipped:
        return f"skipped: {esc(m.skipped)}"
    if m.error:
        return f"the port cannot run: {esc(m.error)}"
    if m.first is None:
        return "no stage diverges at this size"
    at = scientific(m.first_rel) if m.first_rel is not None else esc(m.first_note)
    text = f"first diverges at <b>{esc(m.first)}</b>: {at}"
    if m.kind == "inference":
        text += f"; logits {scientific(m.logits_rel)}, top-5 {percent(m.top5)}"
    else:
        text += f" ({esc(m.first_note)})"
    return text


PLOT_WIDTH = 640  # the plots' own pixels (measure.plot), shown unscaled


def _plot(m: measure.Measurement, width: int) -> str:
    if not m.points:
        return ""
    name = f"{PLOTS}/{measure.plot_name(m)}"
    return (
        f'<a href="{name}"><img src="{name}" width="{width}" alt="relative error at every stage: {esc(m.pitfall)}"></a>'
    )


def differences_section(rows: list[differences.Row], measured: list[measure.Measurement]) -> str:
    by_row: dict[str, list[measure.Measurement]] = {}
    for m in measured:
        row = PITFALLS[m.pitfall].row if m.pitfall in PITFALLS else None
        if row:
            by_row.setdefault(row, []).append(m)
    body = []
    for r in rows:
        found = by_row.get(r.what, [])
        effect = "".join(
            f'<div class="effect"><a href="#pit-{esc(m.pitfall)}-{esc(m.variant)}">{esc(m.pitfall)}</a> '
            f"({esc(m.framework)}, {esc(m.variant)}): {_effect(m)}</div>"
            for m in found
        )
        source_note = "" if r.source == "docs" else '<div class="where">(from the model files)</div>'
        body.append(
            f'<tr id="{r.slug}" class="difference{" measured" if found else ""}">'
            f"<th>{esc(r.what)}{source_note}</th>"
            + "".join(f"<td>{markdown_cell(c)}</td>" for c in r.cells)
            + f'<td class="effects">{effect or "<span class=where>no pitfall measures it</span>"}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("what", *NAMES.values(), "measured: what the mistake does"))
    return (
        '<section id="differences"><h2>Where the frameworks differ</h2>'
        "<p>The docs' differences table, then the framework APIs the model files show (marked). The last column: what "
        "getting the row wrong does to a correct port, measured by <code>python -m conformance pitfalls</code> "
        "(first divergent stage and its max relative error; the logits' max relative error and top-5 "
        "agreement); each links to the pitfall's plot of the relative error at every stage. "
        f"Tolerance {REL_TOL:.0e}.</p>"
        f'<table class="differences"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>'
    )


def pitfalls_section(measured: list[measure.Measurement], batch: int | None) -> str:
    rows = []
    for m in measured:
        p = PITFALLS[m.pitfall]
        if m.skipped:
            figures = [f'<td colspan="5">skipped: {esc(m.skipped)}</td>']
        else:
            first = scientific(m.first_rel) if m.first_rel is not None else esc(m.first_note)
            figures = [
                f"<td>{esc(m.first or 'none')}{'' if m.first == m.where else f' (made at {esc(m.where)})'}</td>",
                f'<td class="num">{first}</td>',
                f'<td class="num">{scientific(m.logits_rel)}</td>',
                f'<td class="num">{percent(m.top1)}{_classes(m)}</td>',
                f'<td class="num">{percent(m.top5)}</td>',
            ]
            if m.kind == "training":
                figures[2:] = [f'<td colspan="3">{esc(m.first_note)}</td>']
        rows.append(
            f'<tr id="pit-{esc(m.pitfall)}-{esc(m.variant)}" class="pitfall" data-kind="{m.kind}">'
            f"<th>{esc(m.pitfall)}</th><td>{esc(p.title)}</td>"
            f"<td>{esc(m.framework)} on {esc(m.variant)} at {m.size}, {m.batch} images</td>"
            + "".join(figures)
            + f'<td class="why">{esc(p.why)}'
            + (f"<br><i>changes nothing at input sizes {esc(m.harmless_sizes)}</i>" if m.harmless_sizes else "")
            + "</td></tr>"
        )
        if m.points:  # the plot under its row, at a size its axes can be read
            rows.append(f'<tr class="plot"><td></td><td colspan="8">{_plot(m, PLOT_WIDTH)}</td></tr>')
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "pitfall",
            "the mistake",
            "broken port",
            "first divergence",
            "max rel there",
            "logits max rel",
            "top-1",
            "top-5",
            "why",
        )
    )
    note = f" over {batch} seeded images" if batch else ""
    return (
        '<section id="pitfalls"><h2>The pitfalls, measured</h2>'
        f"<p>Each mistake made in a correct port; seeded weights and input shared with a correct PyTorch port{note}. "
        "Under top-1, how many classes the correct port's top-1 takes over the batch: seeded random weights "
        "classify little, so top-5 (the same five classes, in the same order) says more. "
        "Training pitfalls run <code>check --train</code>'s two SGD steps and name the step and the tensor.</p>"
        f'<table class="pitfalls"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
    )


def _worst(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return max(numbers) if numbers else None


def check_section(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return ""  # nothing to show: the section and its link are left out
    fws = [fw for fw in doc["frameworks"] if fw != doc.get("reference")]
    rows = []
    for v in doc["variants"]:
        for s in v.get("sizes", []):
            worst = {
                fw: _worst(r["agreement"][fw]["max_rel"] for r in s["stages"] if fw in r["agreement"]) for fw in fws
            }
            ok = all(r["passed"] for r in s["stages"])
            rows.append(
                [esc(v["variant"]), f"{s['size']} x {s['size']}", str(len(s["stages"]))]
                + [scientific(worst[fw]) for fw in fws]
                + [verdict(ok)]
            )
        for t in v.get("training", []):
            rows.append(
                [esc(v["variant"]), "training: " + esc(t["quantity"]), str(t["keys"])]
                + [scientific(_worst([t["agreement"][fw]["max_rel"]])) if fw in t["agreement"] else "-" for fw in fws]
                + [verdict(t["passed"])]
            )
    versions = ", ".join(esc(x) for x in doc["frameworks"].values())
    summary = (
        f"{verdict(doc.get('passed', False))}: {doc.get('checks', '?')} checks, {doc.get('failed', '?')} failed; "
        f"{versions}; reference {esc(doc.get('reference'))}, batch {doc.get('batch')}, seed {doc.get('seed')}"
    )
    head = ["variant", "input", "stages / keys", *(f"{esc(fw)}: worst max rel" for fw in fws), ""]
    return (
        f'<section id="check"><h2>The latest check</h2><p>{summary}</p>'
        + table(head, rows, "check", range(2, 3 + len(fws)))
        + "</section>"
    )


def json_html(value: Any) -> str:
    """Any JSON as nested tables: objects as key/value rows, lists of objects as tables."""
    if isinstance(value, dict):
        return table([], [(f"<b>{esc(k)}</b>", json_html(v)) for k, v in value.items()], "kv")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        return table([esc(k) for k in keys], [[json_html(v.get(k, "")) for k in keys] for v in value], "json")
    if isinstance(value, list):
        return ", ".join(json_html(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def bench_section(doc: Any) -> str:
    if doc is None:
        return ""
    return f'<section id="bench"><h2>Bench figures</h2><p>As the bench JSON gives them.</p>{json_html(doc)}</section>'
