"""The README and the docs stay true: CI runs the README's two commands verbatim, the
README stays a landing page, its variants table gives the spec's counts, and every
link the pages make to code names an object that still shows that code (the site's
strict build, `mkdocs build --strict` in CI, fails on a name that does not exist)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.spec import VARIANTS, resolve
from conformance.spec.shapes import count_params
from conformance.teach import differences

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))}
NAME_LINK = re.compile(r"\[`([^`]+)`\]\[([\w.]+)\]")


def test_ci_runs_the_readme_commands_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    setup_and_check, tests = blocks[0], blocks[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_and_check in ci and all(line in ci for line in tests.splitlines())
    assert "python -m conformance check" in setup_and_check and "pytest" in tests


def test_ci_builds_the_docs_strictly_after_the_install():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install = next(i for i, line in enumerate(ci) if "pip install" in line)
    build = [i for i, line in enumerate(ci) if "mkdocs build --strict" in line]
    assert build and build[0] > install, "CI must build the docs with mkdocs build --strict after installing"


def test_the_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 250, "the README is the landing page: the manual goes to docs/"
    for heading in ("## Variants", "## Sample report", "## The interface", "## The manual"):
        assert heading in README


def variants_table_errors(text: str) -> list[str]:
    """Each variant's row of the variants table: its name, and its trainable counts without
    and with aux heads (or the one count, with the moving statistics where TF-slim counts
    them apart), as the spec computes them."""
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|.*\| ([^|]+) \|$", text, re.M)}
    if set(rows) != set(VARIANTS):
        return [f"the variants table lists {sorted(rows)}, the spec {sorted(VARIANTS)}"]
    errors = []
    for name, cell in rows.items():
        published = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", cell)]
        plain = count_params(resolve(name))
        if " / " in cell:
            expected = [plain[0], count_params(resolve(name, aux_logits=True))[0]]
        elif "moving statistics" in cell:
            expected = [plain[0], plain[1]]
        else:
            expected = [plain[0]]
        if published != expected:
            errors.append(f"{name}: the table says {cell.strip()!r}, the spec {expected}")
    return errors


def test_the_variants_table_gives_the_spec_counts():
    assert variants_table_errors(README) == []


def test_a_wrong_count_in_the_variants_table_is_caught():
    assert "13,004,888" in README
    errors = variants_table_errors(README.replace("13,004,888", "13,004,889"))
    assert len(errors) == 2 and all("the spec [6624904, 13004888]" in e for e in errors)  # googlenet_bn, gluoncv


def test_readme_links_to_files_point_at_files_that_exist():
    targets = re.findall(r"\]\(((?!https?:)[\w./-]+?)(?:#[\w-]+)?\)", README)
    assert len(targets) > 20
    missing = sorted({t for t in targets if not (ROOT / t).exists()})
    assert not missing, f"README links to files that do not exist: {missing}"
    pages = {t for t in targets if t.startswith("docs/") and t.endswith(".md")}
    assert len(pages) >= 12, "the README links to the manual's pages"


def _shows(name: str, label: str) -> bool:
    """A link's label is the code its object shows, or names the object itself (a module's
    path, ``World.bounds`` for ``conformance.world.World.bounds``)."""
    if label.endswith(".py"):  # a module's path, or its file's name (`rows.py`)
        path = differences.locate(name, "")[0]
        return f"/{path}".endswith(f"/{label}") or path == label.removesuffix(".py") + "/__init__.py"
    if label.split(".")[-1] == name.split(".")[-1]:
        return bool(differences.locate(name, ""))
    return bool(differences.locate(name, label))


def test_code_links_name_objects_that_show_their_code():
    """Links read [`code`][module.object]: the object must exist and show the code, so a
    link that drifts when the code changes fails here instead of misleading a reader."""
    links = [(page, *m.groups()) for page, text in PAGES.items() for m in NAME_LINK.finditer(text)]
    assert len(links) > 60
    for page, label, name in links:
        try:
            assert _shows(name, label), f"{page}: [`{label}`][{name}]"
        except ValueError as e:
            pytest.fail(f"{page}: {e}")


def test_a_drifted_code_link_is_caught():
    with pytest.raises(ValueError, match="no longer shows"):
        differences.locate("impl_torch.layers.make_norm", "momentum=1.0 - norm.momentum")
    with pytest.raises(ValueError, match="defines no 'make_norms'"):
        differences.locate("impl_torch.layers.make_norms", "momentum")
    assert not _shows("impl_torch.layers", "impl_keras/layers.py")


def test_paths_the_docs_name_exist():
    """Tests, scripts and benchmarks are named, not linked (the site holds no source):
    each path must still be there."""
    named = re.compile(r"`((?:tests|scripts|benchmarks)/[\w/]+\.py)")
    paths = {p for text in [README, *PAGES.values()] for p in named.findall(text)}
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"the docs name files that do not exist: {missing}"


@pytest.mark.parametrize(
    ("link", "fails"),
    [
        ("[a page](porting.md), [its heading](porting.md#from-python), [`x`][impl_torch.layers.make_norm]", False),
        ("[a page that is not there](portage.md)", True),
        ("[a heading that is not there](porting.md#no-such-heading)", True),
        ("[`make_norm`][impl_torch.layers.make_norms]", True),
    ],
)
def test_the_strict_build_fails_on_a_broken_link(tmp_path, link, fails):
    """CI's `mkdocs build --strict` with the project's settings: a page, heading or code
    name that does not exist fails the build (the control: a good link builds)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("needs the docs extra: pip install -e '.[docs]'")
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Index\n\nSee {link}.\n")
    (docs / "porting.md").write_text("# Porting\n\n## From Python\n\nText.\n")
    source = "# Source\n\n::: impl_torch.layers\n    options:\n      show_if_no_docstring: true\n"
    (docs / "torch.md").write_text(source)
    config.update(docs_dir=str(docs), nav=["index.md", "porting.md", "torch.md"], site_dir=str(tmp_path / "site"))
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")]
    done = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert (done.returncode != 0) == fails, done.stderr[-2000:]
