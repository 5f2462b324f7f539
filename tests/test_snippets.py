"""Every code block of the README and the docs runs as written.

Each ```python block runs in a fresh interpreter, in a working directory shared by the
blocks of its page (so a block may load the file an earlier one saved), with the suite on
the path. A block that imports a framework that is not installed skips, naming it.
```bash blocks run when every command in them is cheap (``spec``, ``--help``); any other
block says why it is not run, in an HTML comment just before it:
``<!-- not run: why -->``, and the test lists that reason as a skip. A block that is
neither cheap nor marked fails, so a new snippet is either run or explained. A block of
minutes says so (``<!-- long: why -->``) and runs with the long tests (``-m e2e``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: ([^\n]+?) -->\s*\Z")
LONG = re.compile(r"<!-- long: ([^\n]+?) -->\s*\Z")
# The packages a block's imports need, beyond the suite's own (which needs nothing here).
NEEDS = {"impl_torch": "torch", "impl_keras": "keras", "impl_mxnet": "mxnet"}
CHEAP = re.compile(r"^python -m conformance (spec\b.*|\S+ --help|--help)$")
TIMEOUT = 900  # seconds: the Keras block traces and fits googlenet_bn once


@dataclass(frozen=True)
class Block:
    page: str  # relative to the checkout
    line: int  # the fence's line
    language: str
    code: str
    not_run: str | None  # the reason the page gives, if any
    long: str | None = None  # why it runs with -m e2e, if it does

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse(text: str, page: str) -> list[Block]:
    found = []
    for m in FENCE.finditer(text):
        marked, long = NOT_RUN.search(text[: m.start()]), LONG.search(text[: m.start()])
        line = text.count("\n", 0, m.start()) + 1
        found.append(
            Block(page, line, m.group(1), m.group(2), marked.group(1) if marked else None, long and long.group(1))
        )
    return found


ALL = [b for path in PAGES for b in parse(path.read_text(), path.relative_to(ROOT).as_posix())]
PYTHON = [b for b in ALL if b.language == "python"]
BASH = [b for b in ALL if b.language == "bash"]


def missing_packages(code: str) -> list[str]:
    modules = re.findall(r"^\s*(?:import|from)\s+(\w+)", code, re.M)
    needed = {NEEDS.get(m, m) for m in modules}
    missing = [m for m in sorted(needed) if importlib.util.find_spec(m) is None]
    if "plot_model" in code and shutil.which("dot") is None:
        missing.append("Graphviz's dot")
    return missing


def commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c for line in joined.splitlines() if (c := line.split(" #", 1)[0].strip()) and not c.startswith("#")]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    made: dict[str, Path] = {}

    def workdir(page: str) -> Path:
        if page not in made:
            made[page] = tmp_path_factory.mktemp(re.sub(r"\W", "_", page))
        return made[page]

    return workdir


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=[pytest.mark.e2e] if b.long else []) for b in PYTHON])
def test_python_block_runs(block, workdirs):
    if block.not_run:
        pytest.skip(f"{block.id} not run: {block.not_run}")
    missing = missing_packages(block.code)
    if missing:
        pytest.skip(f"{block.id} needs {', '.join(missing)}, not installed")
    done = run([sys.executable, "-c", block.code], workdirs(block.page))
    assert done.returncode == 0, f"{block.id} exits {done.returncode}:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.id)
def test_bash_block_runs_or_says_why_not(block, workdirs):
    if block.not_run:
        pytest.skip(f"{block.id} not run: {block.not_run}")
    expensive = [c for c in commands(block.code) if not CHEAP.match(c)]
    assert not expensive, (
        f"{block.id}: {expensive[0]!r} is not cheap enough to run in the tests: "
        "mark the block with <!-- not run: why --> just before it"
    )
    for command in commands(block.code):
        args = shlex.split(command)
        done = run([sys.executable, *args[1:]], workdirs(block.page))
        assert done.returncode == 0, f"{block.id}: {command} exits {done.returncode}:\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), f"{block.id}: {command} printed nothing"


def test_every_page_has_blocks_and_the_readme_has_its_interface_snippet():
    assert len(PYTHON) >= 6 and len(BASH) >= 15
    assert any(b.page == "README.md" and "K.from_canonical(model, params)" in b.code for b in PYTHON)


def test_a_failing_snippet_fails(tmp_path):
    """The negative control: the interface snippet as it stood (``params`` never defined)
    exits with NameError, and an unmarked long command is refused."""
    broken = "import impl_torch as K\nmodel = K.build('inception_mnist')\nK.from_canonical(model, params)\n"
    done = run([sys.executable, "-c", broken], tmp_path)
    assert done.returncode != 0 and "NameError: name 'params' is not defined" in done.stderr
    assert not CHEAP.match("python -m conformance check --train")
    assert CHEAP.match("python -m conformance spec --variant googlenet_bn")
    assert CHEAP.match("python -m conformance port --help")


def test_a_marked_block_is_found_with_its_reason():
    text = "text\n\n<!-- not run: needs the published file -->\n```bash\nrm -rf /\n```\n\n```python\npass\n```\n"
    first, second = parse(text, "page.md")
    assert first.not_run == "needs the published file" and first.language == "bash" and first.line == 4
    assert second.not_run is None and second.code == "pass\n"


def test_a_long_block_runs_with_the_long_tests():
    """``<!-- long: why -->`` makes the block after it an e2e test; the block after that,
    unmarked, runs with the README's command (the marker reaches one block only)."""
    text = "<!-- long: minutes -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    first, second = parse(text, "page.md")
    assert (first.long, first.not_run, second.long) == ("minutes", None, None)
    assert [b.page for b in PYTHON if b.long] == ["docs/frameworks.md"] * 3  # Keras's fit and file, TorchScript
