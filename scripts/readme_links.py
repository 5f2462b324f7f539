"""Re-anchor the README's links to code lines: ``[`code`](file.py#L12)`` must show
``code`` on line 12. With ``--fix``, each link whose line moved is pointed at the line
that now holds its code (the nearest one to the old line); without, the links that
drifted are listed. ``tests/test_readme.py`` fails on a drifted link.

    python scripts/readme_links.py [--fix]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[`([^`]+)`\]\(([\w/]+\.py)#L(\d+)(?:-L(\d+))?\)")


def relink(text: str) -> tuple[str, list[str]]:
    """The README with every drifted link re-anchored, and what could not be."""
    problems: list[str] = []

    def fix(m: re.Match) -> str:
        code, path, start, end = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        if not (ROOT / path).is_file():
            problems.append(f"{path}: no such file (for `{code}`)")
            return m.group(0)
        lines = (ROOT / path).read_text().splitlines()
        last = int(end) if end else start
        if 1 <= start <= last <= len(lines) and code in "\n".join(lines[start - 1 : last]):
            return m.group(0)
        found = [i for i, line in enumerate(lines, 1) if code in line]
        if code.isidentifier():  # a name: its definition, where it has one here
            found = [i for i in found if re.match(rf"\s*(def|class) {code}\b", lines[i - 1])] or found
        if not found:
            problems.append(f"{path}: no line shows `{code}`")
            return m.group(0)
        best = min(found, key=lambda i: abs(i - start))
        return f"[`{code}`]({path}#L{best})"

    return LINK.sub(fix, text), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite README.md with the links re-anchored")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    fixed, problems = relink(text)
    if args.fix and fixed != text:
        readme.write_text(fixed)
    for line in problems:
        print(line, file=sys.stderr)
    moved = sum(a != b for a, b in zip(LINK.findall(text), LINK.findall(fixed), strict=True))
    print(f"{moved} link(s) {'re-anchored' if args.fix else 'drifted'}; {len(problems)} without their code")
    return 1 if problems or (moved and not args.fix) else 0


if __name__ == "__main__":
    sys.exit(main())
