"""The three model files, side by side: split into blocks (the module's header, then each
class and function, in the same order in all three: ``tests/test_mirrors.py``), each
block's lines aligned across the files, and every framework-specific line tied to the
rows of the differences table that explain it."""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .differences import rows_for

PACKAGES = {"torch": "impl_torch", "keras": "impl_keras", "mxnet": "impl_mxnet"}
FRAMEWORKS = tuple(PACKAGES)
ROOT = Path(__file__).resolve().parents[2]
HEADER = "(module)"


@dataclass
class ModelFile:
    framework: str
    path: Path
    lines: list[str]  # line i + 1 of the file is lines[i]
    blocks: dict[str, tuple[int, int]]  # name -> (first line, last line), 1-based, in file order
    prose: set[int]  # docstring lines
    statement: dict[int, tuple[int, int]]  # line -> the (first, last) lines of its statement or comment
    scope: dict[int, str]  # line -> the innermost function around it

    def text(self, line: int) -> str:
        """The whitespace-normalised statement (or comment) holding ``line``."""
        first, last = self.statement.get(line, (line, line))
        return " ".join(s.strip() for s in self.lines[first - 1 : last])


def _header_end(node: ast.stmt) -> int:
    """The last line of a compound statement's header (before its body)."""
    parts: list[ast.AST] = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        parts = [node.args, *([node.returns] if node.returns else [])]
    elif isinstance(node, ast.ClassDef):
        parts = [*node.bases, *node.keywords]
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        parts = [node.target, node.iter]
    elif isinstance(node, (ast.If, ast.While)):
        parts = [node.test]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        parts = [i.context_expr for i in node.items]
    ends = [getattr(n, "end_lineno", None) or node.lineno for p in parts for n in ast.walk(p)]
    return max([node.lineno, *ends])


def _docstrings(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            doc = node.body[0]
            lines.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
    return lines


def read(framework: str, root: Path = ROOT) -> ModelFile:
    path = root / PACKAGES[framework] / "model.py"
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    top = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    starts = [min([n.lineno, *(d.lineno for d in n.decorator_list)]) for n in top]
    blocks = {HEADER: (1, starts[0] - 1)}
    for i, definition in enumerate(top):
        blocks[definition.name] = (starts[i], starts[i + 1] - 1 if i + 1 < len(top) else len(lines))
    statement: dict[int, tuple[int, int]] = {}
    scope: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):  # breadth first: an inner function comes later
            scope.update(dict.fromkeys(range(node.lineno, (node.end_lineno or node.lineno) + 1), node.name))
        if isinstance(node, ast.stmt):
            _record(node, statement)
    for n, line in enumerate(lines, 1):  # a comment on its own line is its own unit
        if line.strip().startswith("#"):
            statement[n] = (n, n)
    return ModelFile(framework, path, lines, blocks, _docstrings(tree), statement, scope)


def _record(node: ast.stmt, statement: dict[int, tuple[int, int]]) -> None:
    """Map each line of a statement (a compound one's header only) to the statement's
    span, unless a smaller statement already holds it."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    span = (first, _header_end(node) if hasattr(node, "body") else (node.end_lineno or node.lineno))
    for n in range(span[0], span[1] + 1):
        if n not in statement or span[1] - span[0] < statement[n][1] - statement[n][0]:
            statement[n] = span


@dataclass
class Line:
    number: int | None  # None: a filler, so that the next lines stay side by side
    specific: bool = False  # code that is not the same in all three files
    rows: list[str] = field(default_factory=list)  # the differences rows that explain it


@dataclass
class Block:
    name: str
    columns: dict[str, list[Line]]  # framework -> lines, the same length in every framework


SIMILAR = 0.5  # difflib ratio from which two lines are taken as one line written two ways


HEAD = re.compile(r"^([\w.]+)\s*(?::[^=]*)?=(?!=)|^([\w.()]+)\(")  # an assignment's target, a call's callee
DEFINITION = re.compile(r"^(?:def|class) (\w+)")
# The forward pass is forward (PyTorch), call (Keras), hybrid_forward (Gluon): as tests/test_mirrors.py
FORWARD = {"call": "forward", "hybrid_forward": "forward"}


def _score(a: str, b: str, prose: bool = False) -> float | None:
    """How well two (stripped) lines correspond: the same code scores highest, then
    definitions of the same function (the forward pass under its three names), lines
    alike (difflib's ratio), lines assigning the same name or calling the same thing
    (``out = {}`` and ``out: dict[str, Tensor] = {}``)."""
    if prose:  # two lines of docstrings: side by side, whatever they say
        return 2.0 if a == b else 1.0
    if a == b:
        return 2.0 if a else 0.5  # blank lines align, but weakly
    if not a or not b:
        return None
    da, db = DEFINITION.match(a), DEFINITION.match(b)
    if da or db:
        same = da and db and FORWARD.get(da.group(1), da.group(1)) == FORWARD.get(db.group(1), db.group(1))
        return 1.5 if same else None
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    if ratio >= SIMILAR:
        return ratio
    ha, hb = HEAD.match(a), HEAD.match(b)
    return SIMILAR if ha and hb and (ha.group(1) or ha.group(2)) == (hb.group(1) or hb.group(2)) else None


def _pairs(a: list[str], b: list[str], prose_a: list[bool], prose_b: list[bool]) -> list[tuple[int | None, int | None]]:
    """Indexes of a and b side by side, None where one side has nothing: the alignment
    with the highest total score (Needleman-Wunsch, gaps free), ties broken towards
    pairing lines early (the table is filled from the end, then read from the start).
    ``prose_*``: docstring lines."""
    n, m = len(a), len(b)
    scores = [[_score(a[i], b[j], prose_a[i] and prose_b[j]) for j in range(m)] for i in range(n)]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]  # best[i][j]: the best alignment of a[i:] with b[j:]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            score = scores[i][j]
            diagonal = best[i + 1][j + 1] + score if score is not None else -1.0
            best[i][j] = max(best[i + 1][j], best[i][j + 1], diagonal)
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    while i < n or j < m:
        score = scores[i][j] if i < n and j < m else None
        if score is not None and best[i][j] == best[i + 1][j + 1] + score:
            out.append((i, j))
            i, j = i + 1, j + 1
        elif i < n and (j == m or best[i][j] == best[i + 1][j]):
            out.append((i, None))
            i += 1
        else:
            out.append((None, j))
            j += 1
    return out


Pairs = list[tuple[int | None, int | None]]


def _merge(tk: Pairs, tm: Pairs, km: Callable[[list[int], list[int]], Pairs]) -> list[tuple[int | None, ...]]:
    """Two alignments that share their first column, as one of three columns. Lines that
    only the second and third files have at the same place are aligned with ``km``."""
    rows: list[tuple[int | None, ...]] = []
    i = j = 0
    while i < len(tk) or j < len(tm):
        ks, ms = [], []
        while i < len(tk) and tk[i][0] is None:
            ks.append(tk[i][1])
            i += 1
        while j < len(tm) and tm[j][0] is None:
            ms.append(tm[j][1])
            j += 1
        if ks or ms:
            pairs = km(ks, ms)  # type: ignore[arg-type]
            rows += [(None, None if a is None else ks[a], None if b is None else ms[b]) for a, b in pairs]
        elif i < len(tk):  # both at the same line of the first file
            rows.append((tk[i][0], tk[i][1], tm[j][1]))
            i, j = i + 1, j + 1
    return rows


def _code(f: ModelFile, n: int) -> bool:
    return bool(f.lines[n - 1].strip()) and n not in f.prose


def align(files: dict[str, ModelFile]) -> list[Block]:
    """Every block of the three files, lines aligned, framework-specific lines tied to rows."""
    torch, keras, mxnet = (files[fw] for fw in FRAMEWORKS)
    if not list(torch.blocks) == list(keras.blocks) == list(mxnet.blocks):
        raise ValueError("the three model files do not define the same classes and functions in the same order")
    return [_block(name, files) for name in torch.blocks]


def _block(name: str, files: dict[str, ModelFile]) -> Block:
    numbers = {fw: _trimmed(f, *f.blocks[name]) for fw, f in files.items()}
    norm = {fw: [files[fw].lines[n - 1].strip() for n in numbers[fw]] for fw in files}
    prose = {fw: [n in files[fw].prose for n in numbers[fw]] for fw in files}

    def pairs(a: str, b: str, ia: list[int] | None = None, ib: list[int] | None = None) -> Pairs:
        ia, ib = (
            ia if ia is not None else list(range(len(norm[a]))),
            ib if ib is not None else list(range(len(norm[b]))),
        )
        return _pairs(
            [norm[a][i] for i in ia], [norm[b][i] for i in ib], [prose[a][i] for i in ia], [prose[b][i] for i in ib]
        )

    rows = _merge(pairs("torch", "keras"), pairs("torch", "mxnet"), lambda ks, ms: pairs("keras", "mxnet", ks, ms))
    columns: dict[str, list[Line]] = {fw: [] for fw in files}
    for row in rows:
        found = {fw: numbers[fw][i] for fw, i in zip(FRAMEWORKS, row, strict=True) if i is not None}
        texts = {fw: files[fw].lines[n - 1].strip() for fw, n in found.items()}
        shared = len(found) == 3 and len(set(texts.values())) == 1
        own = {
            fw: rows_for(files[fw].text(n), files[fw].scope.get(n))
            for fw, n in found.items()
            if not shared and _code(files[fw], n)
        }
        for fw in files:
            specific = fw in own
            # a line's own rows; a line that shows none differs because its counterparts do
            explained = own.get(fw) or set().union(*own.values())
            columns[fw].append(Line(found.get(fw), specific, sorted(explained) if specific else []))
    return Block(name, columns)


def _trimmed(f: ModelFile, first: int, last: int) -> list[int]:
    """The block's line numbers without the blank lines at its end."""
    while last > first and not f.lines[last - 1].strip():
        last -= 1
    return list(range(first, last + 1))


def unexplained(blocks: list[Block]) -> list[tuple[str, str, int]]:
    """(framework, block, line) of framework-specific lines that no row explains."""
    return [
        (fw, b.name, line.number)
        for b in blocks
        for fw, lines in b.columns.items()
        for line in lines
        if line.number is not None and line.specific and not line.rows
    ]
