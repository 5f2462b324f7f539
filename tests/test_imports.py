"""Imports point down: the package's import graph has no cycle, counting imports made
inside functions (a cycle hidden in a function is still a cycle: the two modules cannot
be read, tested or moved apart), and no module imports from a layer above its own.
Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("conformance", "impl_torch", "impl_keras", "impl_mxnet", "impl_jax")

# The documented order, lowest first: a module may import from its own layer or below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("conformance.spec",),
    (
        "conformance.reading",
        "conformance.mxnet_reading",
        "conformance.files",
        "conformance.interrupts",
        "conformance.world",
        "conformance.canonical",
        "conformance.progress",
    ),
    ("conformance.interface", "conformance.frameworks", "conformance.limits"),
    ("impl_torch", "impl_keras", "impl_mxnet", "impl_jax"),
    ("conformance.train",),
    ("conformance.check",),
    ("conformance.formats",),
    ("conformance.teach", "conformance.verify", "conformance.bench", "conformance.kit"),
    # the commands: each one's parser and run function, beside the code it drives
    (
        "conformance.arguments",
        "conformance.spec.command",
        "conformance.train.command",
        "conformance.check.command",
        "conformance.formats.command",
        "conformance.teach.command",
        "conformance.verify.command",
        "conformance.bench.command",
    ),
    ("conformance.__main__", "conformance"),
)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if path.name.endswith("_pb2.py"):
                continue  # protoc's output
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            found += [n for orelse in node.orelse for n in _imports(ast.Module([orelse], []))]
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        found += _imports(node)
    return found


def edges(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project's modules it imports, anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                stem = ".".join([*base, *([node.module] if node.module else [])])
            else:
                stem = node.module or ""
            for alias in node.names:
                candidate = f"{stem}.{alias.name}"
                targets.add(candidate if candidate in known else stem)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    """The layer of the longest prefix that names one."""
    best, depth = -1, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = level, len(prefix)
    return best


GRAPH = edges(modules())


def test_the_import_graph_has_no_cycle():
    assert cycles(GRAPH) == []


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if layer(m) < 0] == []


def test_imports_point_down():
    upward = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert upward == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"a": "from . import b\n", "b": "def f():\n    from . import a\n"}, [["pkg.a", "pkg.b"]]),
        (
            {"a": "import pkg.b\n", "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"},
            [],
        ),
    ],
    ids=["a cycle hidden in a function", "an annotation-only import"],
)
def test_a_cycle_is_found_even_inside_a_function(tmp_path, source, expected):
    """The negative control: the same walk finds a cycle that an import inside a
    function closes, and ignores one that exists only for the type checker."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    known = {"pkg": package / "__init__.py"}
    for name, text in source.items():
        (package / f"{name}.py").write_text(text)
        known[f"pkg.{name}"] = package / f"{name}.py"
    assert cycles(edges(known)) == expected
