"""The page's code section: the model files side by side, Pygments-highlighted,
aligned block by block (:mod:`.source`), each framework-specific line marked and linked
to the row of the differences table that explains it; and the table's cells as HTML,
their links to code pointing at those lines."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from . import differences, source
from .markup import esc

NAMES = differences.FRAMEWORK_COLUMNS  # framework -> its name in the page's headings


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
    grid = f'style="--columns: {len(files)}"'  # one column per file
    parts = [
        '<section id="code"><h2>The model files, side by side</h2>',
        "<p>Block by block (the module, then each class and function, in the same order in every file: "
        "<code>tests/test_mirrors.py</code> holds it), line by line where the lines correspond; long lines wrap, "
        'so the files stay side by side. A <span class="line substance legend">highlighted line</span> is where '
        "a framework does it differently from the others, for a reason in the differences table: its tags "
        "name the rows that explain it (click one). Other lines that are not the same in every file only spell "
        "the same thing in another API (hover one for its row).</p>",
        f'<div class="grid heads" {grid}>{heads}</div>',
    ]
    for b in blocks:
        # the module docstrings and imports are folded (a <details>, no script): the blocks come first
        title = f"<h3>{esc(_block_title(b.name))}</h3>"
        head, tail = (f"<details><summary>{title}</summary>", "</details>") if b.name == source.HEADER else (title, "")
        parts.append(f'<div class="block" id="block-{esc(b.name)}">{head}<div class="grid code" {grid}>')
        columns = list(b.columns.items())
        for i in range(len(columns[0][1])):  # one grid row per aligned line: wrapping keeps them side by side
            numbers = {fw: column[i].number for fw, column in columns}
            texts = {fw: None if n is None else files[fw].text(n) for fw, n in numbers.items()}
            for fw, column in columns:
                parts.append(_line(fw, column[i], lit[fw], rows, _apart(texts, fw)))
        parts.append(f"</div>{tail}</div>")
    parts.append("</section>")
    return "".join(parts)


def _apart(texts: Mapping[str, str | None], fw: str) -> bool:
    """Whether ``fw``'s statement stands apart in its row: it is not what most of the
    files write (the one text more files share than any other; a filler counts as a
    text). Of three: the one written otherwise, or each of three different ones. Of
    four: the one or two written otherwise, and both halves of a two-two split (NCHW
    beside NHWC)."""
    counts = Counter(texts.values())
    leaders = [text for text, n in counts.items() if n == max(counts.values())]
    return leaders != [texts[fw]]


def _block_title(name: str) -> str:
    return "imports and module docstring" if name == source.HEADER else name


def _line(fw: str, line: source.Line, lit: list[str], rows: Mapping[str, differences.Row], apart: bool) -> str:
    if line.number is None:
        return f'<div class="line filler" data-fw="{fw}"> </div>'
    code = lit[line.number - 1] or " "
    number = f'<span class="ln">{line.number}</span>'
    anchor = f'id="{fw}-L{line.number}" data-fw="{fw}"'
    if not line.specific:
        return f'<div class="line" {anchor}>{number}{code}</div>'
    known = [r for r in line.rows if r in rows]
    substance = apart and any(rows[r].source != "model files" for r in known)
    tags = "".join(f'<a class="why" href="#{rows[r].slug}">{esc(r)}</a>' for r in known)
    kind = "substance" if substance else "quiet"
    return f'<div class="line {kind}" {anchor} data-rows="{esc(",".join(line.rows))}">{number}{code}{tags}</div>'


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
