"""The README stays true: CI runs its two commands verbatim, and every line it points
at in the model files exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_commands_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    setup_and_check, tests = blocks[0], blocks[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_and_check in ci and tests in ci
    assert "python -m conformance check" in setup_and_check and "pytest" in tests


def test_line_links_point_at_the_code_they_name():
    """Links read [`code`](file.py#L12): the code must be on that line, so a link that
    drifts when the file changes fails here instead of misleading a reader."""
    links = re.findall(r"\[`([^`]+)`\]\(([\w/]+\.py)#L(\d+)(?:-L(\d+))?\)", README)
    assert len(links) > 15
    for text, path, start, end in links:
        lines = (ROOT / path).read_text().splitlines()
        first, last = int(start), int(end or start)
        assert 1 <= first <= last <= len(lines), f"{path}#L{start}: the file has {len(lines)} lines"
        assert text in "\n".join(lines[first - 1 : last]), f"{path}#L{start} no longer shows `{text}`"
    bare = re.findall(r"\[[^`\]]*\]\([\w/]+\.py#L\d+", README)
    assert not bare, f"links to lines must name their code: {bare}"


def test_links_to_files_point_at_files_that_exist():
    targets = re.findall(r"\]\(((?!https?:)[\w./-]+?)(?:#[\w-]+)?\)", README)
    assert len(targets) > 20
    missing = sorted({t for t in targets if not (ROOT / t).exists()})
    assert not missing, f"README links to files that do not exist: {missing}"
