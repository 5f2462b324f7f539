"""The model files, side by side: split into blocks (the module's header, then each
class and function, in the same order in every file: ``tests/test_mirrors.py``), each
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

PACKAGES = {"torch": "impl_torch", "keras": "impl_keras", "mxnet": "impl_mxnet", "jax": "impl_jax"}
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
    comment: list[int] = []  # comment lines on their own, one after another, are one unit: one thought
    for n, line in enumerate([*lines, ""], 1):
        if line.strip().startswith("#"):
            comment.append(n)
        else:
            for c in comment:
                statement[c] = (comment[0], comment[-1])
            comment = []
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
    specific: bool = False  # code that is not the same in every file
    rows: list[str] = field(default_factory=list)  # the differences rows that explain it


@dataclass
class Block:
    name: str
    columns: dict[str, list[Line]]  # framework -> lines, the same length in every framework


SIMILAR = 0.5  # difflib ratio from which two lines are taken as one line written two ways


HEAD = re.compile(r"^([\w.]+)\s*(?::[^=]*)?=(?!=)|^([\w.()]+)\(")  # an assignment's target, a call's callee
DEFINITION = re.compile(r"^(?:def|class) (\w+)")
# The forward pass is forward (PyTorch), call (Keras), hybrid_forward (Gluon), __call__ (Flax):
# as tests/test_mirrors.py
FORWARD = {"call": "forward", "hybrid_forward": "forward", "__call__": "forward"}


def _score(a: str, b: str, prose: bool = False) -> float | None:
    """How well two (stripped) lines correspond: the same code scores highest, then
    definitions of the same function (the forward pass under its four names), lines
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
Pairer = Callable[[int, int, list[int], list[int]], Pairs]


def _columns(runs: list[list[int]], pairs: Pairer, files: list[int]) -> list[tuple[int | None, ...]]:
    """Rows of one column per file, aligning ``runs`` (line indexes, one run per file of
    ``files``) progressively: the first file with each other (``pairs``), merged on the
    first file's lines; the lines the others hold between two of them are aligned the
    same way among themselves, recursively, with the first file's column empty. Two
    files give their pairwise alignment; the order of ``files`` decides which file
    anchors which."""
    first, rest = runs[0], runs[1:]
    if not rest:
        return [(i,) for i in first]
    alignments = [pairs(files[0], fw, first, run) for fw, run in zip(files[1:], rest, strict=True)]
    at = [0] * len(rest)  # where each alignment with the first file has got to
    rows: list[tuple[int | None, ...]] = []
    while any(k < len(a) for k, a in zip(at, alignments, strict=True)):
        between: list[list[int]] = [[] for _ in rest]  # lines only the others have, here
        for f, alignment in enumerate(alignments):
            while at[f] < len(alignment) and alignment[at[f]][0] is None:
                only = alignment[at[f]][1]  # never None: a pair holds a line of one file at least
                between[f] += [] if only is None else [rest[f][only]]
                at[f] += 1
        if any(between):
            rows += [(None, *row) for row in _columns(between, pairs, files[1:])]
        elif at[0] < len(alignments[0]):  # every alignment at the same line of the first file
            line = _at(first, alignments[0][at[0]][0])
            others = [_at(run, a[k][1]) for run, a, k in zip(rest, alignments, at, strict=True)]
            rows.append((line, *others))
            at = [k + 1 for k in at]
    return rows


def _at(run: list[int], i: int | None) -> int | None:
    """The line index at position ``i`` of a run, None for a gap."""
    return None if i is None else run[i]


def _code(f: ModelFile, n: int) -> bool:
    return bool(f.lines[n - 1].strip()) and n not in f.prose


def align(files: dict[str, ModelFile]) -> list[Block]:
    """Every block of the files, lines aligned, framework-specific lines tied to rows."""
    names = [list(f.blocks) for f in files.values()]
    if any(n != names[0] for n in names):
        raise ValueError(
            f"the model files of {', '.join(files)} do not define the same classes and functions in the same order"
        )
    return [_block(name, files) for name in names[0]]


def _block(name: str, files: dict[str, ModelFile]) -> Block:
    frameworks = list(files)
    numbers = {fw: _trimmed(f, *f.blocks[name]) for fw, f in files.items()}
    norm = {fw: [files[fw].lines[n - 1].strip() for n in numbers[fw]] for fw in files}
    prose = {fw: [n in files[fw].prose for n in numbers[fw]] for fw in files}

    def pairs(a: int, b: int, ia: list[int], ib: list[int]) -> Pairs:
        fa, fb = frameworks[a], frameworks[b]
        return _pairs(
            [norm[fa][i] for i in ia], [norm[fb][i] for i in ib], [prose[fa][i] for i in ia], [prose[fb][i] for i in ib]
        )

    runs = [list(range(len(numbers[fw]))) for fw in frameworks]
    columns: dict[str, list[Line]] = {fw: [] for fw in files}
    for row in _columns(runs, pairs, list(range(len(frameworks)))):
        found = {fw: numbers[fw][i] for fw, i in zip(frameworks, row, strict=True) if i is not None}
        texts = {fw: files[fw].lines[n - 1].strip() for fw, n in found.items()}
        shared = len(found) == len(files) and len(set(texts.values())) == 1
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
