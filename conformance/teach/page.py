"""``python -m conformance page DIR``: a static site that teaches the differences.

One HTML file and its stylesheet (no script, nothing fetched: it opens from disk), and
the pitfalls' plots:

* the spec table of a variant: every stage's shape, parameters and multiply-adds;
* the model files side by side (four: PyTorch, Keras 3, MXNet Gluon, JAX + Flax),
  aligned block by block and line by line,
  Pygments-highlighted, each framework-specific line marked and linked to the row
  of the differences table that explains it (:mod:`.source`, :mod:`.differences`);
* the differences table, each row with what its pitfalls measure, and their plots;
* the pitfalls, every figure;
* the latest ``check`` report and ``bench`` figures, if given as JSON.

This module reads the reports and writes the files; the sections are rendered by
:mod:`.page_sections` and :mod:`.page_code`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import spec
from ..files import atomic_write
from ..reading import Damaged, json_document
from . import differences, measure, outputs
from .page_code import NAMES, code_section, code_style
from .page_sections import PLOTS, bench_section, check_section, differences_section, pitfalls_section, spec_section

INDEX, STYLE = "index.html", "style.css"
TITLE = f"GoogLeNet in {', '.join(list(NAMES.values())[:-1])} and {list(NAMES.values())[-1]}: what differs"


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


STYLE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5em 3em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin: .8em 0 .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; } code { font-size: 92%; background: #f3f3f6; padding: 0 .2em; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid #ddd; padding: .25em .5em;
  vertical-align: top; text-align: left; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.spec td { padding: .1em .6em; } .where { color: #777; font-size: 90%; }
.pass { color: #16813b; font-weight: bold; } .fail { color: #c0392b; font-weight: bold; }
.grid { display: grid; grid-template-columns: repeat(var(--columns, 4), minmax(0, 1fr)); column-gap: .5em; }
.heads { position: sticky; top: 0; background: #fff; z-index: 2; padding: .3em 0; border-bottom: 1px solid #ccc; }
.colhead { font-weight: bold; overflow-wrap: anywhere; }
.block h3 { margin: 1em 0 .3em; font: bold 13px monospace; color: #444; }
details summary { cursor: pointer; } details summary h3 { display: inline-block; }
.grid.code { font: 11px/1.45 ui-monospace, Menlo, Consolas, monospace; }
.grid.code .line { background: #fafafa; white-space: pre-wrap; overflow-wrap: anywhere; padding: 0 .4em 0 3.2em;
  text-indent: -3.2em; min-height: 1.45em; border-left: 3px solid transparent; }
.grid.code .filler { background: repeating-linear-gradient(135deg, #f3f3f3 0 4px, #fafafa 4px 8px); }
.grid.code .line.substance, span.line.substance { background: #fff4d6; border-left: 3px solid #e67e22; }
.line:target { outline: 2px solid #e67e22; }
span.legend { padding: 0 .3em; }
.line.quiet a.why { display: none; } .line.quiet:hover a.why { display: inline; background: #999; }
.ln { display: inline-block; width: 2.6em; color: #aaa; text-align: right; margin-right: .6em; text-indent: 0;
  user-select: none; }
a.why { font: 10px system-ui, sans-serif; background: #e67e22; color: #fff; border-radius: 3px;
  padding: 0 .35em; margin-left: .6em; text-decoration: none; vertical-align: 1px; }
tr.difference:target, tr.pitfall:target { background: #fff4d6; }
td.effects { min-width: 200px; } .effect { margin-bottom: .6em; } td.why { max-width: 420px; }
table.differences { font-size: 13px; } table.differences code { overflow-wrap: anywhere; }
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
        f"<title>{TITLE}</title>"
        f'<link rel="stylesheet" href="{STYLE}"></head><body>'
        f"<h1>{TITLE}</h1>"
        "<p>One spec, an implementation in each framework, and what each framework difference does when a port "
        "gets it wrong. "
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
