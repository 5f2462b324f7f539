"""The four model files are mirrors: a reader puts them side by side and sees only
what a framework forces. These tests hold the parts a diff cannot show at a glance:
the same classes and functions in the same order, the same methods (each framework's
name for the forward pass), and a shape comment at the same places."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("impl_torch", "impl_keras", "impl_mxnet", "impl_jax")
FORWARD = {"forward": "forward", "call": "forward", "hybrid_forward": "forward", "__call__": "forward"}
KERAS_ONLY = {"build", "get_config", "from_config"}  # Keras builds weights and serialises itself


def definitions(package: str, module: str) -> list[str]:
    tree = ast.parse((ROOT / package / f"{module}.py").read_text())
    return [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]


def methods(package: str) -> dict[str, list[str]]:
    tree = ast.parse((ROOT / package / "model.py").read_text())
    return {
        c.name: [
            FORWARD.get(f.name, f.name) for f in c.body if isinstance(f, ast.FunctionDef) and f.name not in KERAS_ONLY
        ]
        for c in tree.body
        if isinstance(c, ast.ClassDef)
    }


def shape_comments(package: str) -> dict[str, int]:
    """Shape comments (``# N x ...``) per class or function of model.py."""
    source = (ROOT / package / "model.py").read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    return {
        n.name: sum(bool(re.search(r"#.*\bN x ", line)) for line in lines[n.lineno - 1 : n.end_lineno])
        for n in tree.body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }


def test_model_files_define_the_same_classes_and_functions_in_the_same_order():
    torch, keras, mxnet, jax = (definitions(p, "model") for p in FRAMEWORKS)
    assert torch == keras == mxnet == jax
    assert torch[:3] == ["Inception", "ResidualBlock", "InceptionAux"] and torch[-1] == "GoogLeNet"


def test_model_classes_have_the_same_methods():
    torch, keras, mxnet, jax = (methods(p) for p in FRAMEWORKS)
    # Gluon's hybrid_forward cannot return a dict of stages to an imperative caller; a
    # thin forward_stages runs it with mx.nd (the one framework-forced extra method).
    mxnet["GoogLeNet"] = [m for m in mxnet["GoogLeNet"] if m != "_stages"]
    assert torch == keras == mxnet == jax


def test_shape_comments_sit_in_the_same_blocks():
    counts = [shape_comments(p) for p in FRAMEWORKS]
    assert counts[0] == counts[1] == counts[2] == counts[3]
    assert counts[0]["GoogLeNet"] >= 5 and counts[0]["InceptionAux"] >= 5


def test_layers_share_their_makers_in_the_same_order():
    """Framework-specific gap fillers (Keras's pools, Gluon's LRN block) come on top."""
    shared = ["BasicConv2d", "PlainConv2d", "make_pool", "make_lrn", "make_relu", "make_op", "make_chain"]
    for package in FRAMEWORKS:
        names = definitions(package, "layers")
        assert [n for n in names if n in shared] == shared, package


def test_framework_private_apis_are_called_in_layers_only():
    """Calls into a framework's private attributes live in one place per framework."""
    private = re.compile(
        r"\._(flatten_layers|collect_params_with_prefix|children|kwargs|clear_cached_op|differentiable)\b"
    )
    for package in FRAMEWORKS:
        for path in (ROOT / package).glob("*.py"):
            if path.name != "layers.py":
                assert not private.search(path.read_text()), path
