"""``python -m conformance page DIR``: a static site that teaches the differences.

One HTML file and its stylesheet (no script, nothing fetched: it opens from disk), and
the pitfalls' plots:

* the spec table of a variant: every stage's shape, parameters and multiply-adds;
* the three model files side by side, aligned block by block and line by line,
  Pygments-highlighted, each framework-specific line marked and linked to the row
  of the differences table that explains it (:mod:`.source`, :mod:`.differences`);
* the differences table, each row with what its pitfalls measure, and their plots;
* the pitfalls, every figure;
* the latest ``check`` report and ``bench`` figures, if given as JSON.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import spec
from ..check.compare import REL_TOL
from ..files import atomic_write
from ..reading import Damaged, json_document
from . import differences, measure, outputs, source
from .pitfalls import PITFALLS

INDEX, STYLE, PLOTS = "index.html", "style.css", "plots"
NAMES = {"torch": "PyTorch", "keras": "Keras 3", "mxnet": "MXNet Gluon"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def read_report(path: Path, option: str, keys: Sequence[str] = ()) -> Any:
    """A JSON document given with ``option``; ValueError naming it otherwise."""
    try:
        doc = json_document(path)
    except OSError as e:
        raise ValueError(f"{option} {path}: {e.strerror}") from None
    except Damaged as e:
        raise ValueError(f"{option} {path}: {e}") from None
    missing = [k for k in keys if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ValueError(f"{option} {path}: not the expected report (no {missing[0]!r})")
    return doc


def check_inputs(directory: Path, variant: str, size: int | None, plot_names: Iterable[str], force: bool) -> None:
    """Refuse, before any work, a size the variant cannot run or outputs that may not be written."""
    if size is not None:
        try:
            spec.stage_shapes(spec.resolve(variant), size)
        except spec.SpecError as e:
            raise ValueError(f"--input-size {size}: {e}") from None
    outputs.check_dir(directory, [INDEX, STYLE], force, "page DIR")
    if directory.is_dir():  # else both are made
        outputs.check_dir(directory / PLOTS, plot_names, force, "page DIR")


# --------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", numeric: Iterable[int] = ()) -> str:
    """A table; cells are HTML already. ``numeric``: right-aligned columns."""
    right = set(numeric)
    th = "".join(f"<th{' class=num' if i in right else ''}>{h}</th>" for i, h in enumerate(head))
    thead = f"<thead><tr>{th}</tr></thead>" if head else ""  # key/value tables have none
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in right else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


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
        f"<p>{esc(p.variant.description)}. Source: {_linkify(esc(p.variant.source))}.</p>"
        f"<p>Output of every stage (one image), with the parameters, BatchNorm statistics and multiply-adds of "
        f"its layers{aux}, from <code>conformance.spec</code> alone: no framework imported. "
        f"<code>python -m conformance spec --variant {esc(variant)} --aux-logits</code> prints the same.</p>"
        + _table(
            ["stage", "output (C x H x W)", "parameters", "BN statistics", "multiply-adds"], rows, "spec", (2, 3, 4)
        )
        + "</section>"
    )


def _linkify(text: str) -> str:
    return re.sub(r"(https?://[^\s)]+)", r'<a href="\1">\1</a>', text)


# --------------------------------------------------------------------------------------
# Code
# --------------------------------------------------------------------------------------


def highlighted_lines(text: str) -> list[str]:
    """Each line of a Python file as HTML, Pygments token classes on spans."""
    from pygments.lexers import PythonLexer
    from pygments.token import STANDARD_TYPES

    lines = [""]
    for ttype, value in PythonLexer(stripnl=False, ensurenl=False).get_tokens(text):
        t = ttype
        while t not in STANDARD_TYPES:
            t = t.parent
        cls = STANDARD_TYPES[t]
        for i, part in enumerate(value.split("\n")):
            if i:
                lines.append("")
            if part:
                lines[-1] += f'<span class="{cls}">{esc(part)}</span>' if cls else esc(part)
    return lines


def code_style() -> str:
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(style="default").get_style_defs(".code"))


def code_section(rows: Mapping[str, differences.Row]) -> str:
    files = {fw: source.read(fw) for fw in source.PACKAGES}
    blocks = source.align(files)
    lit = {fw: highlighted_lines("\n".join(f.lines)) for fw, f in files.items()}
    heads = "".join(
        f'<div class="colhead" data-fw="{fw}">{NAMES[fw]}: <code>{esc(f.path.relative_to(source.ROOT))}</code></div>'
        for fw, f in files.items()
    )
    parts = [
        '<section id="code"><h2>The three model files, side by side</h2>',
        "<p>Block by block (the module, then each class and function, in the same order in all three: "
        "<code>tests/test_mirrors.py</code> holds it), line by line where the lines correspond; long lines wrap, "
        'so the three stay side by side. A <span class="line substance legend">highlighted line</span> is where '
        "one framework does it differently from the other two, for a reason in the differences table: its tags "
        "name the rows that explain it (click one). Other lines that are not the same in all three only spell "
        "the same thing in another API (hover one for its row).</p>",
        f'<div class="grid heads">{heads}</div>',
    ]
    for b in blocks:
        # the module docstrings and imports are folded (a <details>, no script): the blocks come first
        title = f"<h3>{esc(_block_title(b.name))}</h3>"
        head, tail = (f"<details><summary>{title}</summary>", "</details>") if b.name == source.HEADER else (title, "")
        parts.append(f'<div class="block" id="block-{esc(b.name)}">{head}<div class="grid code">')
        columns = list(b.columns.items())
        for i in range(len(columns[0][1])):  # one grid row per aligned line: wrapping keeps them side by side
            numbers = {fw: column[i].number for fw, column in columns}
            texts = {fw: None if n is None else files[fw].text(n) for fw, n in numbers.items()}
            for fw, column in columns:
                # marked where it stands alone: the one framework of three that writes it otherwise
                alone = sum(text == texts[fw] for text in texts.values()) == 1
                parts.append(_line(fw, column[i], lit[fw], rows, alone))
        parts.append(f"</div>{tail}</div>")
    parts.append("</section>")
    return "".join(parts)


def _block_title(name: str) -> str:
    return "imports and module docstring" if name == source.HEADER else name


def _line(fw: str, line: source.Line, lit: list[str], rows: Mapping[str, differences.Row], alone: bool) -> str:
    if line.number is None:
        return f'<div class="line filler" data-fw="{fw}"> </div>'
    code = lit[line.number - 1] or " "
    number = f'<span class="ln">{line.number}</span>'
    anchor = f'id="{fw}-L{line.number}" data-fw="{fw}"'
    if not line.specific:
        return f'<div class="line" {anchor}>{number}{code}</div>'
    known = [r for r in line.rows if r in rows]
    substance = alone and any(rows[r].source != "model files" for r in known)
    tags = "".join(f'<a class="why" href="#{rows[r].slug}">{esc(r)}</a>' for r in known)
    kind = "substance" if substance else "quiet"
    return f'<div class="line {kind}" {anchor} data-rows="{esc(",".join(line.rows))}">{number}{code}{tags}</div>'


# --------------------------------------------------------------------------------------
# Differences and pitfalls
# --------------------------------------------------------------------------------------

LINK = re.compile(r"\[`([^`]+)`\]\[([\w.]+)\]")
CODE = re.compile(r"`([^`]+)`")


def markdown_cell(text: str) -> str:
    """The docs' cell markdown as HTML: links to code in a model file go to that line here;
    links into other files name the file and line."""
    out, last = [], 0
    for m in LINK.finditer(text):
        out.append(_inline(text[last : m.start()]))
        code = m.group(1)
        path, line = differences.locate(m.group(2), code)
        fw = next((fw for fw, pkg in source.PACKAGES.items() if path == f"{pkg}/model.py"), None)
        if fw is not None:
            out.append(f'<a href="#{fw}-L{line}"><code>{esc(code)}</code></a>')
        else:
            out.append(f'<code>{esc(code)}</code> <span class="where">{esc(path)}:{line}</span>')
        last = m.end()
    out.append(_inline(text[last:]))
    return "".join(out)


def _inline(text: str) -> str:
    return CODE.sub(lambda m: f"<code>{m.group(1)}</code>", esc(text).replace("&#x27;", "'"))


def _rel(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


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
    at = _rel(m.first_rel) if m.first_rel is not None else esc(m.first_note)
    text = f"first diverges at <b>{esc(m.first)}</b>: {at}"
    if m.kind == "inference":
        text += f"; logits {_rel(m.logits_rel)}, top-5 {_pct(m.top5)}"
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
        '<section id="differences"><h2>Where the three frameworks differ</h2>'
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
            first = _rel(m.first_rel) if m.first_rel is not None else esc(m.first_note)
            figures = [
                f"<td>{esc(m.first or 'none')}{'' if m.first == m.where else f' (made at {esc(m.where)})'}</td>",
                f'<td class="num">{first}</td>',
                f'<td class="num">{_rel(m.logits_rel)}</td>',
                f'<td class="num">{_pct(m.top1)}{_classes(m)}</td>',
                f'<td class="num">{_pct(m.top5)}</td>',
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


# --------------------------------------------------------------------------------------
# Check and bench reports
# --------------------------------------------------------------------------------------


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
                + [_rel(worst[fw]) for fw in fws]
                + [_mark(ok)]
            )
        for t in v.get("training", []):
            rows.append(
                [esc(v["variant"]), "training: " + esc(t["quantity"]), str(t["keys"])]
                + [_rel(_worst([t["agreement"][fw]["max_rel"]])) if fw in t["agreement"] else "-" for fw in fws]
                + [_mark(t["passed"])]
            )
    versions = ", ".join(esc(x) for x in doc["frameworks"].values())
    summary = (
        f"{_mark(doc.get('passed', False))}: {doc.get('checks', '?')} checks, {doc.get('failed', '?')} failed; "
        f"{versions}; reference {esc(doc.get('reference'))}, batch {doc.get('batch')}, seed {doc.get('seed')}"
    )
    head = ["variant", "input", "stages / keys", *(f"{esc(fw)}: worst max rel" for fw in fws), ""]
    return (
        f'<section id="check"><h2>The latest check</h2><p>{summary}</p>'
        + _table(head, rows, "check", range(2, 3 + len(fws)))
        + "</section>"
    )


def _mark(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def json_html(value: Any) -> str:
    """Any JSON as nested tables: objects as key/value rows, lists of objects as tables."""
    if isinstance(value, dict):
        return _table([], [(f"<b>{esc(k)}</b>", json_html(v)) for k, v in value.items()], "kv")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        return _table([esc(k) for k in keys], [[json_html(v.get(k, "")) for k in keys] for v in value], "json")
    if isinstance(value, list):
        return ", ".join(json_html(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def bench_section(doc: Any) -> str:
    if doc is None:
        return ""
    return f'<section id="bench"><h2>Bench figures</h2><p>As the bench JSON gives them.</p>{json_html(doc)}</section>'


# --------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------

STYLE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5em 3em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin: .8em 0 .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; } code { font-size: 92%; background: #f3f3f6; padding: 0 .2em; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid #ddd; padding: .25em .5em;
  vertical-align: top; text-align: left; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.spec td { padding: .1em .6em; } .where { color: #777; font-size: 90%; }
.pass { color: #16813b; font-weight: bold; } .fail { color: #c0392b; font-weight: bold; }
.grid { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); column-gap: .6em; }
.heads { position: sticky; top: 0; background: #fff; z-index: 2; padding: .3em 0; border-bottom: 1px solid #ccc; }
.colhead { font-weight: bold; overflow-wrap: anywhere; }
.block h3 { margin: 1em 0 .3em; font: bold 13px monospace; color: #444; }
details summary { cursor: pointer; } details summary h3 { display: inline-block; }
.grid.code { font: 11.5px/1.5 ui-monospace, Menlo, Consolas, monospace; }
.grid.code .line { background: #fafafa; white-space: pre-wrap; overflow-wrap: anywhere; padding: 0 .5em 0 3.8em;
  text-indent: -3.8em; min-height: 1.5em; border-left: 3px solid transparent; }
.grid.code .filler { background: repeating-linear-gradient(135deg, #f3f3f3 0 4px, #fafafa 4px 8px); }
.grid.code .line.substance, span.line.substance { background: #fff4d6; border-left: 3px solid #e67e22; }
.line:target { outline: 2px solid #e67e22; }
span.legend { padding: 0 .3em; }
.line.quiet a.why { display: none; } .line.quiet:hover a.why { display: inline; background: #999; }
.ln { display: inline-block; width: 3em; color: #aaa; text-align: right; margin-right: .8em; text-indent: 0;
  user-select: none; }
a.why { font: 10px system-ui, sans-serif; background: #e67e22; color: #fff; border-radius: 3px;
  padding: 0 .35em; margin-left: .6em; text-decoration: none; vertical-align: 1px; }
tr.difference:target, tr.pitfall:target { background: #fff4d6; }
td.effects { min-width: 240px; } .effect { margin-bottom: .6em; } td.why { max-width: 420px; }
tr.plot td { border-top: none; } tr.plot img { max-width: 100%; height: auto; }
"""


def render(
    variant: str,
    size: int | None,
    rows: list[differences.Row],
    measured: list[measure.Measurement],
    batch: int | None,
    check: Mapping[str, Any] | None,
    bench: Any,
) -> str:
    by_what = {r.what: r for r in rows}
    sections = {
        "spec": ("spec", spec_section(variant, size)),
        "code": ("model files", code_section(by_what)),
        "differences": ("differences", differences_section(rows, measured)),
        "pitfalls": ("pitfalls", pitfalls_section(measured, batch)),
        "check": ("check", check_section(check)),
        "bench": ("bench", bench_section(bench)),
    }
    shown = {anchor: part for anchor, part in sections.items() if part[1]}
    nav = " ".join(f'<a href="#{anchor}">{title}</a>' for anchor, (title, _) in shown.items())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>GoogLeNet in PyTorch, Keras 3 and MXNet Gluon: what differs</title>"
        f'<link rel="stylesheet" href="{STYLE}"></head><body>'
        "<h1>GoogLeNet in PyTorch, Keras 3 and MXNet Gluon: what differs</h1>"
        "<p>One spec, three implementations, and what each framework difference does when a port gets it wrong. "
        f"Built by <code>python -m conformance page</code>.</p><nav>{nav}</nav>"
        + "".join(html_part for _, html_part in shown.values())
        + "</body></html>"
    )


def write(
    directory: Path,
    variant: str,
    size: int | None,
    measured: list[measure.Measurement],
    batch: int | None,
    check: Mapping[str, Any] | None,
    bench: Any,
    force: bool = False,
) -> Path:
    """Write the site into ``directory``; returns the index file."""
    rows = differences.read_readme() + differences.MODEL_ROWS
    page = render(variant, size, rows, measured, batch, check, bench)
    plots = outputs.made(outputs.made(directory) / PLOTS)
    for m in measured:
        measure.write_plot(m, plots, overwrite=force)
    atomic_write(directory / STYLE, (STYLE_CSS + code_style()).encode(), overwrite=force)
    return atomic_write(directory / INDEX, page.encode(), overwrite=force)
