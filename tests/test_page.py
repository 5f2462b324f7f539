"""``python -m conformance page DIR``: the static site, built from the pitfalls'
measurements, rendered by a real browser (headless Chromium) whose DOM is checked and
whose screenshot is kept; and the parts that need no browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conformance.check import harness, report
from conformance.teach import differences, measure, page_code, source
from conformance.teach.pitfalls import PITFALLS

from .conftest import PITFALL_BATCH, cli, installed, measure_pitfalls

INSTALL = "apt-get update && apt-get install -y chromium"
BLOCKS = [name for name in source.read("torch").blocks if name != source.HEADER]
NUMBER = re.compile(r"\d\.\de[+-]\d\d|\d+%")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"headless Chromium is not installed; install it with: {INSTALL}")


def browse(url: str, profile: Path, *options: str) -> subprocess.CompletedProcess:
    """Headless Chromium, offline and fresh (no sync, no component updates, a new profile)."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        *options,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


class Dom(HTMLParser):
    """The parts of the rendered DOM the tests read: code columns, pitfall rows, anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.code: dict[str, list[str]] = {}  # framework -> text of each block's column
        self.rows: list[list[str]] = []  # frameworks of each grid row of code, in order
        self.marks: dict[str, int] = {}  # class of a framework-specific line -> how many
        self.pitfalls: dict[str, list[str]] = {}  # row id -> text of its numeric cells
        self.links: list[tuple[str, str]] = []  # (tag, href or src)
        self.scripts = 0
        self._blocks = 0
        self._line: str | None = None
        self._row: str | None = None
        self._num = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "div" and "block" in classes:
            self._blocks += 1
        if tag == "div" and "line" in classes and a.get("data-fw"):
            self._line = a["data-fw"]
            column = self.code.setdefault(self._line, [])
            column += [""] * (self._blocks - len(column))
            if not self.rows or self._line in self.rows[-1]:
                self.rows.append([])
            self.rows[-1].append(self._line)
            for kind in ("substance", "quiet"):
                self.marks[kind] = self.marks.get(kind, 0) + (kind in classes)
        if tag == "tr" and a.get("class") == "pitfall":
            self._row = a["id"]
            self.pitfalls[self._row] = []
        if tag == "td" and self._row and a.get("class") == "num":
            self._num = True
            self.pitfalls[self._row].append("")
        for key in ("href", "src"):
            if key in a:
                self.links.append((tag, a[key]))
        self.scripts += tag == "script"

    def handle_endtag(self, tag):
        if tag == "div" and self._line:
            self.code[self._line][-1] += "\n"
            self._line = None
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._num = False

    def handle_data(self, data):
        if self._line:
            self.code[self._line][-1] += data
        if self._num:
            self.pitfalls[self._row][-1] += data


@pytest.fixture(scope="module")
def site(tmp_path_factory, pitfall_measurements, xla_training_pitfall_measurements):
    """The page, built by the command from a pitfalls --json report of the whole catalogue
    and a check report (for the long tests: pytest -m e2e)."""
    if not installed():
        pytest.skip("no framework installed: nothing to measure")
    root = tmp_path_factory.mktemp("page")
    measured = [*pitfall_measurements.values(), *xla_training_pitfall_measurements.values()]
    pitfalls_json = measure.write_json(measured, root / "pitfalls.json", PITFALL_BATCH, 0)
    fw = next(iter(installed()))
    check = harness.run(["googlenet"], {fw: installed()[fw]}, {}, sizes=[97], batch=1)
    check_json = report.write_json(check, root / "check.json")
    (root / "bench.json").write_text(json.dumps({"runtimes": [{"runtime": "torch eager", "images_per_s": 44.0}]}))
    out = root / "site"
    r = cli(
        "page",
        str(out),
        "--pitfalls-json",
        str(pitfalls_json),
        "--check-json",
        str(check_json),
        "--bench-json",
        str(root / "bench.json"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return out, measured


@pytest.mark.e2e
def test_the_page_renders_in_chromium_with_every_part(site, tmp_path):
    out, measured = site
    url = (out / "index.html").resolve().as_uri()
    r = browse(url, tmp_path / "profile", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Dom()
    dom.feed(r.stdout)
    # four code columns (torch, keras, mxnet, jax), every block name in each
    assert set(dom.code) == set(source.PACKAGES) and len(source.PACKAGES) == 4
    assert len({len(columns) for columns in dom.code.values()}) == 1  # one column per framework per block
    # one grid row per aligned line, the four frameworks side by side in each
    assert dom.rows and all(row == list(source.PACKAGES) for row in dom.rows)
    # what differs in substance is highlighted, API spelling is not: fewer than half the lines
    assert 0 < dom.marks["substance"] < len(dom.rows) * len(source.PACKAGES) / 2 and dom.marks["quiet"] > 0
    for fw, columns in dom.code.items():
        text = "\n".join(columns)
        for name in BLOCKS:
            assert re.search(rf"(class|def) {name}\b", text), (fw, name)
    # every pitfall row with a number
    expected = {f"pit-{m.pitfall}-{m.variant}" for m in measured}
    assert set(dom.pitfalls) == expected
    for row, cells in dom.pitfalls.items():
        found = next(m for m in measured if f"pit-{m.pitfall}-{m.variant}" == row)
        if not found.skipped and not found.error:  # a mistake the loader refuses has no figures
            assert any(NUMBER.search(c) for c in cells), (row, cells)
    # every row of the docs' differences table, and every line's tag points at a row
    rows = differences.read_readme() + differences.MODEL_ROWS
    assert {r.slug for r in rows} <= dom.ids
    tags = [href for tag, href in dom.links if tag == "a" and href.startswith("#row-")]
    assert tags and {h[1:] for h in tags} <= dom.ids
    assert {"spec", "code", "differences", "pitfalls", "check", "bench"} <= dom.ids
    # nothing fetched from the network, no script
    assert dom.scripts == 0
    assert not [link for link in dom.links if link[0] in ("img", "link") and "://" in link[1]]
    assert all((out / src).is_file() for tag, src in dom.links if tag == "img")


@pytest.mark.e2e
def test_a_screenshot_is_kept(site, tmp_path):
    out, _ = site
    shot = tmp_path / "page.png"
    r = browse(
        (out / "index.html").resolve().as_uri(), tmp_path / "profile", "--window-size=1400,2400", f"--screenshot={shot}"
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # rendered text and highlighting, not a blank page
    keep = os.environ.get("CONFORMANCE_PAGE_SCREENSHOT")
    if keep:  # the artefact, where CI asks for it
        shutil.copyfile(shot, keep)


def test_every_framework_specific_line_is_explained_by_a_row():
    files = {fw: source.read(fw) for fw in source.PACKAGES}
    blocks = source.align(files)
    assert source.unexplained(blocks) == []
    marked = [line for b in blocks for lines in b.columns.values() for line in lines if line.specific]
    assert len(marked) > 100
    assert len([line for b in blocks for line in b.columns["jax"] if line.specific]) > 50
    names = {r.what for r in differences.read_readme() + differences.MODEL_ROWS}
    assert {row for line in marked for row in line.rows} <= names
    assert {row for row, _ in differences.RULES} <= names and set(differences.SCOPES.values()) <= names
    # the table has a column per model file, in the page's order
    assert list(differences.FRAMEWORK_COLUMNS) == list(source.PACKAGES)
    assert all(len(r.cells) == len(source.PACKAGES) for r in differences.read_readme() + differences.MODEL_ROWS)


def test_a_jax_line_no_row_explains_is_caught(monkeypatch):
    """The negative control: without the rule tying JAX's explicit random keys to the
    "random numbers" row, the JAX lines that make the network's key stream are named."""
    files = {fw: source.read(fw) for fw in source.PACKAGES}
    rules = [(row, pattern) for row, pattern in differences.RULES if row != "random numbers"]
    monkeypatch.setattr(differences, "RULES", rules)
    found = source.unexplained(source.align(files))
    assert found and {fw for fw, _, _ in found} == {"jax"}
    assert {files["jax"].lines[n - 1].strip() for _, block, n in found if block == "GoogLeNet"} >= {
        "rngs = nnx.Rngs(dropout=0)"
    }


@pytest.mark.parametrize(
    "frameworks", [("torch", "jax"), ("torch", "keras", "mxnet"), ("jax", "mxnet", "keras", "torch")]
)
def test_any_number_of_files_is_aligned(frameworks):
    """N files, no special case: every file's lines appear once each, in order, in its
    column; lines written alike share a row; two files give their pairwise alignment."""
    files = {fw: source.read(fw) for fw in frameworks}
    for b in source.align(files):
        for fw, lines in b.columns.items():
            numbers = [line.number for line in lines if line.number is not None]
            first, last = files[fw].blocks[b.name]
            assert numbers == list(range(first, numbers[-1] + 1)) and numbers[-1] <= last, (fw, b.name)
        rows = list(zip(*b.columns.values(), strict=True))
        assert all(any(line.number for line in row) for row in rows)
        for row in rows:  # a row's lines alike, when all are there: "return out" beside "return out"
            texts = {files[fw].lines[ln.number - 1].strip() for fw, ln in zip(files, row, strict=True) if ln.number}
            if len(texts) == 1 and all(ln.number for ln in row):
                assert not any(ln.specific for ln in row)
    if len(frameworks) == 2:
        block = source.align(files)[1]
        numbers = {fw: source._trimmed(f, *f.blocks[block.name]) for fw, f in files.items()}
        text = {fw: [files[fw].lines[n - 1].strip() for n in numbers[fw]] for fw in files}
        prose = {fw: [n in files[fw].prose for n in numbers[fw]] for fw in files}
        expected = source._pairs(*text.values(), *prose.values())
        a, b = frameworks
        assert [(x.number, y.number) for x, y in zip(*block.columns.values(), strict=True)] == [
            (None if i is None else numbers[a][i], None if j is None else numbers[b][j]) for i, j in expected
        ]


@pytest.mark.parametrize(
    ("texts", "apart"),
    [
        ({"torch": "a", "keras": "b", "mxnet": "a"}, {"keras"}),
        ({"torch": "a", "keras": "b", "mxnet": "c"}, {"torch", "keras", "mxnet"}),
        ({"torch": "a", "keras": "b", "mxnet": "a", "jax": "b"}, {"torch", "keras", "mxnet", "jax"}),
        ({"torch": "a", "keras": "b", "mxnet": "a", "jax": "a"}, {"keras"}),
        ({"torch": "a", "keras": "b", "mxnet": "a", "jax": None}, {"keras", "jax"}),
    ],
)
def test_a_line_is_highlighted_where_it_stands_apart(texts, apart):
    """NCHW beside NHWC, two and two: both halves stand apart; one of four written
    otherwise: that one."""
    assert {fw for fw in texts if page_code._apart(texts, fw)} == apart


def test_the_same_lines_are_aligned_side_by_side():
    files = {fw: source.read(fw) for fw in source.PACKAGES}
    blocks = {b.name: b for b in source.align(files)}
    assert [name for name in blocks if name != source.HEADER] == BLOCKS
    for b in blocks.values():
        assert len({len(lines) for lines in b.columns.values()}) == 1
    rows = list(zip(*blocks["Inception"].columns.values(), strict=True))
    text = [
        tuple(
            files[fw].lines[ln.number - 1].strip() if ln.number else None
            for fw, ln in zip(source.PACKAGES, row, strict=True)
        )
        for row in rows
    ]
    assert (
        "return torch.cat(outputs, 1)",
        "return ops.concatenate(outputs, axis=-1)",
        "return F.concat(*outputs, dim=1)",
        "return jnp.concatenate(outputs, axis=-1)",
    ) in text
    forward = next(t for t in text if t[0] and t[0].startswith("def forward"))
    assert forward[1].startswith("def call") and forward[2].startswith("def hybrid_forward")
    assert forward[3].startswith("def __call__")
    # the loops TorchScript cannot write stand side by side in the other three
    assert (
        None,
        "for branch in self.branches:",
        "for branch in self.branches:",
        "for branch in self.branches:",
    ) in text
    concat = next(r for r in rows if r[0].number and "torch.cat" in files["torch"].lines[r[0].number - 1])
    assert all("layout" in line.rows for line in concat)


def test_readme_rows_are_read_from_the_readme():
    rows = differences.read_readme()
    assert [r.what for r in rows][:3] == ["layout", "conv padding", "BatchNorm"]
    assert all(PITFALLS[name].row in {r.what for r in rows} for name in PITFALLS if PITFALLS[name].row)
    with pytest.raises(ValueError, match="no section"):
        differences.readme_rows("# nothing here")
    three = f"{differences.TITLE}\n\n| what | PyTorch | Keras 3 | MXNet Gluon |\n|---|---|---|---|\n| a | b | c | d |\n"
    with pytest.raises(ValueError, match=r"whose columns are what \| PyTorch \| Keras 3 \| MXNet Gluon \| JAX"):
        differences.readme_rows(three)


def test_cells_link_to_the_model_file_lines_they_name():
    """The table's cells name code ([`code`][impl_torch.model.Inception.forward]); the page
    links each to the line of its model file that shows it, and names the file and line
    of code elsewhere."""
    layout = next(r for r in differences.read_readme() if r.what == "layout")
    line = next(i for i, text in enumerate(source.read("torch").lines, 1) if "torch.cat(outputs, 1)" in text)
    assert f'<a href="#torch-L{line}"><code>torch.cat(outputs, 1)</code></a>' in page_code.markdown_cell(
        layout.cells[0]
    )
    bn = next(r for r in differences.read_readme() if r.what == "BatchNorm")
    assert '<span class="where">conformance/canonical.py:' in page_code.markdown_cell(bn.cells[2])
    with pytest.raises(ValueError, match="no longer shows"):
        page_code.markdown_cell("[`torch.cat(outputs, 2)`][impl_torch.model.Inception.forward]")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-size", "20"], "--input-size 20: input size 20"),
        (["--check-json", "{tmp}/bad.json"], "--check-json {tmp}/bad.json: not JSON"),
        (["--check-json", "{tmp}/other.json"], "--check-json {tmp}/other.json: not the expected report"),
        (["--pitfalls-json", "{tmp}/other.json"], "--pitfalls-json {tmp}/other.json: not a pitfalls --json report"),
        (["--pitfalls-json", "{tmp}/none.json"], "--pitfalls-json {tmp}/none.json: No such file"),
    ],
)
def test_page_refuses_bad_input_before_any_work(tmp_path, args, message):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "other.json").write_text('{"x": 1}')
    args = [a.format(tmp=tmp_path) for a in args]
    r = cli("page", str(tmp_path / "site"), *args)
    assert r.returncode == 2 and message.format(tmp=tmp_path) in r.stderr, r.stderr
    assert not (tmp_path / "site").exists()


def test_page_never_overwrites_without_force(tmp_path):
    """A page of one quick pitfall, made again: refused without --force, replaced with it."""
    if "torch" not in installed():
        pytest.skip("torch is not installed: nothing to measure")
    measured = list(measure_pitfalls(["count-include-pad"]).values())
    pitfalls_json = measure.write_json(measured, tmp_path / "pitfalls.json", PITFALL_BATCH, 0)
    copy = tmp_path / "site"
    assert cli("page", str(copy), "--pitfalls-json", str(pitfalls_json)).returncode == 0
    r = cli("page", str(copy), "--pitfalls-json", str(pitfalls_json))
    assert r.returncode == 2 and "index.html: already exists; pass --force" in r.stderr
    r = cli("page", str(copy), "--pitfalls-json", str(pitfalls_json), "--force")
    assert r.returncode == 0, r.stderr
    page = (copy / "index.html").read_text()
    # no check or bench given: their sections and links are left out, not shown empty
    assert 'id="check"' not in page and 'href="#check"' not in page and 'id="bench"' not in page
