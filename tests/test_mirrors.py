"""The four model files are mirrors: a reader puts them side by side and sees only
what a framework forces. These tests hold the parts a diff cannot show at a glance:
the same classes and functions in the same order, the same methods (each framework's
name for the forward pass), and a shape comment at the same places."""

from __future__ import annotations

import ast
import io
import re
import tokenize
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


# Each file's one job, the same in every package; a package without data-parallel
# training (impl_jax) leaves out distributed.py, and says so in its __init__.
JOBS = {
    "__init__.py": "the interface: build, forward, stages, exports, Trainer",
    "model.py": "the network, mirrored class for class",
    "layers.py": "the layers of the plan's units, one maker per kind of op",
    "engine.py": "what the trainer and backend need beside the layers",
    "weights.py": "canonical <-> framework weights",
    "train.py": "the single-process Trainer",
    "distributed.py": "the data-parallel Trainer",
}
OPTIONAL = {"distributed.py"}


def files(package: str, root: Path = ROOT) -> set[str]:
    return {path.name for path in (root / package).glob("*.py")}


def test_every_framework_has_the_same_file_set_each_with_its_job():
    for package in FRAMEWORKS:
        assert files(package) - OPTIONAL == set(JOBS) - OPTIONAL, package
        assert files(package) <= set(JOBS), package


def test_the_file_set_check_fails_on_a_stray_or_missing_file(tmp_path):
    """Negative control: a package with a helper module outside the set, or without engine.py."""
    for name in JOBS:
        (tmp_path / name).write_text("")
    (tmp_path / "helpers.py").write_text("")
    assert files(tmp_path.name, tmp_path.parent) - set(JOBS) == {"helpers.py"}
    (tmp_path / "helpers.py").unlink()
    (tmp_path / "engine.py").unlink()
    assert set(JOBS) - OPTIONAL - files(tmp_path.name, tmp_path.parent) == {"engine.py"}


def test_trainers_expose_the_same_hooks():
    """Every Trainer has ``loss`` and keeps batch statistics through its engine's
    ``BatchStats``: one shape, so a distributed Trainer reuses its parent's loss."""
    for package in FRAMEWORKS:
        tree = ast.parse((ROOT / package / "train.py").read_text())
        (trainer,) = [c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Trainer"]
        names = {f.name for f in trainer.body if isinstance(f, ast.FunctionDef)}
        assert {"step", "loss", "gradients", "batch_stats", "state", "load_state", "reseed"} <= names, package
        assert "BatchStats(model)" in (ROOT / package / "train.py").read_text(), package
        assert "BatchStats" in definitions(package, "engine"), package


SEAMS = {"shard", "loss_weight"}


def trainer_methods(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    (trainer,) = [c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Trainer"]
    return {f.name for f in trainer.body if isinstance(f, ast.FunctionDef)}


def test_distributed_trainers_have_the_seams_the_negative_controls_override():
    """``shard`` and ``loss_weight``, the same in every distributed Trainer, and the only
    methods tests/distributed_faults.py's broken ports override; no fault in the Trainers."""
    faults = ast.parse((ROOT / "tests" / "distributed_faults.py").read_text())
    classes = [c for c in ast.walk(faults) if isinstance(c, ast.ClassDef)]
    overridden = {f.name for c in classes for f in c.body if isinstance(f, ast.FunctionDef)}
    assert overridden == SEAMS
    for package in FRAMEWORKS:
        path = ROOT / package / "distributed.py"
        if path.is_file():
            assert trainer_methods(path) >= SEAMS, path
            assert not re.search(r"\bfault\b", path.read_text()), path


def test_the_seams_check_fails_on_a_trainer_without_them(tmp_path):
    """Negative control: a distributed Trainer with its shard picked inline."""
    path = tmp_path / "distributed.py"
    path.write_text("class Trainer:\n    def step(self, x, y):\n        return x[: len(x) // 2]\n")
    assert SEAMS - trainer_methods(path) == SEAMS


def test_distributed_trainers_take_the_loss_from_train():
    for package in FRAMEWORKS:
        path = ROOT / package / "distributed.py"
        if path.is_file():
            assert "cross_entropy" not in path.read_text(), path


def test_layers_share_their_makers_in_the_same_order():
    """Framework-specific gap fillers (Keras's pools, Gluon's LRN block) come on top."""
    shared = ["BasicConv2d", "PlainConv2d", "make_pool", "make_lrn", "make_relu", "make_op", "make_chain"]
    for package in FRAMEWORKS:
        names = definitions(package, "layers")
        assert [n for n in names if n in shared] == shared, package


PRIVATE = re.compile(
    r"\._(flatten_layers|collect_params_with_prefix|children|kwargs|clear_cached_op|differentiable|version|updaters|params|get_variable_index)\b"
)
PRIVATE_HOMES = {"layers.py", "engine.py"}


def private_calls(package: Path) -> list[Path]:
    """Files of ``package`` outside layers.py and engine.py that call a private API."""
    return [
        path
        for path in sorted(package.glob("*.py"))
        if path.name not in PRIVATE_HOMES and PRIVATE.search(path.read_text())
    ]


def test_framework_private_apis_are_called_in_layers_or_engine_only():
    """Calls into a framework's private attributes live in two places per framework: a
    layer's own (layers.py) and everything else's (engine.py)."""
    for package in FRAMEWORKS:
        assert private_calls(ROOT / package) == [], package


def test_the_private_api_check_finds_a_call_outside_its_homes(tmp_path):
    """Negative control: ``model._kwargs`` in train.py is found; in engine.py it is not."""
    (tmp_path / "engine.py").write_text("def options(block):\n    return block._kwargs\n")
    assert private_calls(tmp_path) == []
    (tmp_path / "train.py").write_text("eps = model._kwargs['eps']\n")
    assert private_calls(tmp_path) == [tmp_path / "train.py"]


HELPERS = re.compile(r"\b(optimizer|momentum_states|seed_generator|tf\.distribute|onnx|_updaters|autograd\.pause)\b")


def code(source: str) -> str:
    """``source`` without its comments and strings: what it runs, not what it explains."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING))


def test_layers_hold_layers_only():
    """layers.py defines layers and their makers: no optimizer, seed, distribution or
    export helper (those are the engine's)."""
    for package in FRAMEWORKS:
        assert not HELPERS.search(code((ROOT / package / "layers.py").read_text())), package


def test_the_layers_check_finds_a_helper():
    """Negative control: the onnx.mapping shim, as it stood in impl_mxnet/layers.py."""
    assert HELPERS.search(code("def onnx_mapping():\n    import onnx  # the exporter\n"))
    assert not HELPERS.search(code("x = 1  # tf.distribute all-reduces it\n"))
