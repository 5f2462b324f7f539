"""Every test runs in CI, and once: the README's command (``python -m pytest -q``, whose
``addopts`` leave out the long end-to-end tests) and the marker line of .ci/run together
select each test that is not a two-host test, whatever markers it carries. Checked by pytest
itself, under this project's pyproject.toml, on a file holding one test per combination of
the registered markers: a marker added later is covered by the same check."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CI = ROOT / ".ci" / "run"
OWN_LINE = "two_hosts"  # root only: its own line of .ci/run runs tests/test_two_hosts.py


def registered_markers() -> list[str]:
    options = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
    return [entry.split(":")[0].strip() for entry in options["markers"]]


def pytest_lines(script: str) -> list[list[str]]:
    """The options of each line of ``script`` that runs the whole suite (``python -m pytest``
    without a path): the lines that must, between them, run every test."""
    lines = []
    for line in script.splitlines():
        if line.lstrip().startswith("#") or "python -m pytest" not in line:
            continue
        args = shlex.split(line.split("python -m pytest", 1)[1].split("&&")[0])
        values = {i + 1 for i, arg in enumerate(args) if arg in ("-m", "-k")}
        paths = [arg for i, arg in enumerate(args) if not arg.startswith("-") and i not in values]
        if not paths:
            lines.append(args)
    return lines


def combinations(markers: list[str]) -> dict[str, tuple[str, ...]]:
    """One test name per subset of ``markers``."""
    subsets = itertools.chain.from_iterable(itertools.combinations(markers, n) for n in range(len(markers) + 1))
    return {"test_" + ("__".join(subset) or "unmarked"): subset for subset in subsets}


def selected(tmp_path: Path, tests: dict[str, tuple[str, ...]], options: list[str]) -> set[str]:
    """The tests pytest collects from a file of ``tests`` with ``options`` under this project's
    configuration (its addopts included, as the README's command gets them). One ``-q``:
    twice, pytest would list files, not tests."""
    source = ["import pytest", ""]
    for name, marks in tests.items():
        source += [f"@pytest.mark.{mark}" for mark in marks] + [f"def {name}():", "    pass", ""]
    (tmp_path / "test_combinations.py").write_text("\n".join(source))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(PYPROJECT), "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
        + ["--collect-only", "-q", *(o for o in options if o != "-q"), str(tmp_path / "test_combinations.py")],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode in (0, 5), run.stdout + run.stderr  # 5: every test deselected
    return {line.split("::", 1)[1] for line in run.stdout.splitlines() if "::" in line}


def coverage(tmp_path: Path, lines: list[list[str]]) -> tuple[set[str], set[str]]:
    """The tests (not two-host) no line runs, and those more than one line runs."""
    tests = combinations(registered_markers())
    owed = {name for name, marks in tests.items() if OWN_LINE not in marks}
    runs = [selected(tmp_path, tests, options) for options in lines]
    twice = {name for a, b in itertools.combinations(runs, 2) for name in a & b}
    return owed - set().union(*runs), twice


def test_the_readme_command_and_the_marker_line_run_every_test_once(tmp_path):
    lines = pytest_lines(CI.read_text())
    assert ["-q"] in lines and ["-q", "-m", "e2e"] in lines, lines  # the README's command, the marker line
    assert coverage(tmp_path, lines) == (set(), set())
    assert "e2e" in registered_markers()


def test_the_readme_command_alone_leaves_the_end_to_end_tests_out(tmp_path):
    """Negative control: without the marker line, every test marked e2e goes unrun."""
    lines = [options for options in pytest_lines(CI.read_text()) if "e2e" not in options]
    missing, _ = coverage(tmp_path, lines)
    assert missing and all("e2e" in name and OWN_LINE not in name for name in missing), missing
    assert missing == {name for name in combinations(registered_markers()) if "e2e" in name and OWN_LINE not in name}


def test_a_line_running_everything_would_run_the_end_to_end_tests_twice(tmp_path):
    """Negative control: a marker line that overrode nothing (``-m ''``) repeats the suite."""
    missing, twice = coverage(tmp_path, [["-q"], ["-q", "-m", ""]])
    assert missing == set() and twice and all(OWN_LINE not in name for name in twice)
