"""Every test runs in CI, and once: the README's command (``python -m pytest -q -n auto --dist loadfile``, whose
``addopts`` leave out the long end-to-end tests) and the marker line of .ci/run (``-m e2e``, with the same
workers) together select each test that is not a two-host test, whatever markers it carries. Checked by pytest
itself, under this project's pyproject.toml, on a file holding one test per combination of
the registered markers: a marker added later is covered by the same check."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CI = ROOT / ".ci" / "run"
OWN_LINE = "two_hosts"  # root only: its own line of .ci/run runs tests/test_two_hosts.py


def registered_markers(config) -> list[str]:
    """The markers pyproject.toml registers, as this pytest read them (pytest and its plugins
    register theirs in the same list: skip, xfail, ...)."""
    text = PYPROJECT.read_text()
    return [entry.split(":")[0] for entry in config.getini("markers") if f'"{entry}"' in text]


def pytest_lines(script: str) -> list[list[str]]:
    """The options of each line of ``script`` that runs the whole suite (``python -m pytest``
    without a path): the lines that must, between them, run every test."""
    lines = []
    for line in script.splitlines():
        if line.lstrip().startswith("#") or "python -m pytest" not in line:
            continue
        args = shlex.split(line.split("python -m pytest", 1)[1].split("&&")[0])
        values = {i + 1 for i, arg in enumerate(args) if arg in ("-m", "-k", "-n", "--dist")}
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
    configured = ["-c", str(PYPROJECT), "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *configured,
            "--collect-only",
            "-q",
            *(o for o in options if o != "-q"),
            str(tmp_path / "test_combinations.py"),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode in (0, 5), run.stdout + run.stderr  # 5: every test deselected
    return {line.split("::", 1)[1] for line in run.stdout.splitlines() if "::" in line}


def coverage(tmp_path: Path, markers: list[str], lines: list[list[str]]) -> tuple[set[str], set[str]]:
    """The tests (not two-host) no line runs, and those more than one line runs."""
    tests = combinations(markers)
    owed = {name for name, marks in tests.items() if OWN_LINE not in marks}
    runs = [selected(tmp_path, tests, options) for options in lines]
    twice = {name for a, b in itertools.combinations(runs, 2) for name in a & b}
    return owed - set().union(*runs), twice


def test_the_readme_command_and_the_marker_line_run_every_test_once(tmp_path, pytestconfig):
    lines = pytest_lines(CI.read_text())
    readme = ["-q", "-n", "auto", "--dist", "loadfile"]  # a worker per core, each file in one
    marked = ["-q", "-m", "e2e", *readme[1:]]  # the long tests, a worker per core too
    assert readme in lines and marked in lines, lines  # the README's command, the marker line
    markers = registered_markers(pytestconfig)
    assert "e2e" in markers and OWN_LINE in markers
    assert coverage(tmp_path, markers, lines) == (set(), set())


def test_the_readme_command_alone_leaves_the_end_to_end_tests_out(tmp_path, pytestconfig):
    """Negative control: without the marker line, every test marked e2e goes unrun."""
    markers = registered_markers(pytestconfig)
    lines = [options for options in pytest_lines(CI.read_text()) if "e2e" not in options]
    missing, _ = coverage(tmp_path, markers, lines)
    assert missing == {name for name in combinations(markers) if "e2e" in name and OWN_LINE not in name}, missing
    assert missing  # the combinations hold e2e tests


def test_a_line_running_everything_would_run_the_end_to_end_tests_twice(tmp_path, pytestconfig):
    """Negative control: a marker line that overrode nothing (``-m ''``) repeats the suite."""
    missing, twice = coverage(tmp_path, registered_markers(pytestconfig), [["-q"], ["-q", "-m", ""]])
    assert missing == set() and twice and all(OWN_LINE not in name for name in twice)
