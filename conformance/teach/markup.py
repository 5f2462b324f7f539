"""The page's small HTML pieces: escaped text, tables, links, and figures written as text."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", numeric: Iterable[int] = ()) -> str:
    """A table; cells are HTML already. ``numeric``: right-aligned columns."""
    right = set(numeric)
    th = "".join(f"<th{' class=num' if i in right else ''}>{h}</th>" for i, h in enumerate(head))
    thead = f"<thead><tr>{th}</tr></thead>" if head else ""  # key/value tables have none
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in right else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def linkify(text: str) -> str:
    return re.sub(r"(https?://[^\s)]+)", r'<a href="\1">\1</a>', text)


def scientific(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'
