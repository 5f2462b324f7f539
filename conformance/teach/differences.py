"""The differences table, and which lines of the model files each row explains.

The rows are the table "Where the four frameworks differ", read from its page of the
docs, ``docs/differences.md`` (one source: the page shows what the docs say). Its cells
link to code by name (``[`code`][impl_torch.layers.make_norm]``, which the docs site
resolves); :func:`locate` finds the line of the named object that shows the code. The model files
show a few framework APIs that table leaves to the code (base classes, operator
namespaces, layer names, saving, imports); :data:`MODEL_ROWS` states them in the
same form. :data:`RULES` say which rows explain a line: a framework-specific line of
a model file (one that is not the same in all of them, once aligned) is explained by
every row whose pattern matches it, or, if none does, by its counterparts' rows.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# the table's columns after "what", in the order of source.PACKAGES
FRAMEWORK_COLUMNS = {"torch": "PyTorch", "keras": "Keras 3", "mxnet": "MXNet Gluon", "jax": "JAX + Flax"}
TITLE = "# Where the four frameworks differ"
ROOT = Path(__file__).resolve().parents[2]
TABLE_PAGE = ROOT / "docs" / "differences.md"


@dataclass(frozen=True)
class Row:
    what: str
    cells: tuple[str, ...]  # one per FRAMEWORK_COLUMNS, in its order: markdown, as the docs write them
    source: str  # "docs" or "model files"

    @property
    def slug(self) -> str:
        return "row-" + re.sub(r"[^a-z0-9]+", "-", self.what.lower()).strip("-")


def readme_rows(text: str) -> list[Row]:
    """The rows of the docs' differences table; ValueError if the table is missing."""
    if TITLE not in text:
        raise ValueError(f"{TABLE_PAGE.name}: no section {TITLE!r}")
    section = text.split(TITLE, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    heads = ["what", *FRAMEWORK_COLUMNS.values()]
    if len(lines) < 3 or [c.strip() for c in lines[0].strip().strip("|").split("|")] != heads:
        raise ValueError(
            f"{TABLE_PAGE.name}: the section {TITLE!r} holds no table whose columns are {' | '.join(heads)}"
        )
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(heads):
            raise ValueError(f"{TABLE_PAGE.name}: a differences row needs {len(heads)} cells, got {len(cells)}: {line}")
        rows.append(Row(cells[0], tuple(cells[1:]), "docs"))
    return rows


def read_readme(path: Path = TABLE_PAGE) -> list[Row]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(
            f"{path}: cannot read the docs' differences table ({e.strerror}); build the page from a source checkout"
        ) from None
    return readme_rows(text)


def locate(name: str, code: str) -> tuple[str, int]:
    """Where a cell's link ``[`code`][name]`` points: the file (relative to the checkout)
    and the first line of the object ``name`` (``impl_torch.layers.make_norm``,
    ``impl_mxnet.build``, ``conformance.canonical.GLUON_BN``) that shows ``code``.
    ValueError when the object is gone or no longer shows the code."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        path = next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)
        if path is not None:
            break
    else:
        raise ValueError(f"{name}: no module of the checkout holds it")
    lines = path.read_text().splitlines()
    first, last = 1, len(lines)
    body = ast.parse("\n".join(lines)).body
    for part in parts[cut:]:
        node = next((n for n in body if _defines(n, part)), None)
        if node is None:
            raise ValueError(f"{name}: {path.relative_to(ROOT)} defines no {part!r} there")
        decorators = [d.lineno for d in getattr(node, "decorator_list", [])]
        first, last = min([node.lineno, *decorators]), node.end_lineno or node.lineno
        body = node.body if isinstance(node, ast.ClassDef) else []
    found = next((i for i in range(first, last + 1) if code in lines[i - 1]), None)
    if found is None:
        raise ValueError(f"{name} ({path.relative_to(ROOT)}:{first}-{last}) no longer shows `{code}`")
    return str(path.relative_to(ROOT)), found


def _defines(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == name
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == name for t in targets)


# The framework APIs the model files show and the docs' table leaves to the code.
MODEL_ROWS = [
    Row(
        "module API",
        (
            "subclass `nn.Module` (`nn.ModuleDict` for the network and its Inception blocks); "
            "`forward(self, x)`; children registered by attribute or `add_module`",
            "subclass `layers.Layer` (`Block` for a layer made from one unit of the plan, `keras.Model` "
            "for the network); `call(self, x, training=None)`; children by attribute",
            "subclass `nn.HybridBlock` (`Network` for the network); `hybrid_forward(self, F, x)`, `F` is "
            "`mx.nd` or `mx.sym`; children by attribute; `forward_stages` runs `_stages` with `mx.nd`",
            "subclass `nnx.Module` (no `super().__init__()`); `__call__(self, x)`; children and variables by "
            "attribute, made with their shapes (every layer is given its input features); the training mode is "
            "set on the layers (`train()` / `eval()`)",
        ),
        "model files",
    ),
    Row(
        "operators",
        (
            "`torch.*` and `torch.nn.functional` as `F`",
            "`keras.ops` (so a chain of ops is `ops_`)",
            "`F.*`: the namespace `hybrid_forward` receives",
            "`jax.numpy` as `jnp`, `jax.nn`, `jax.lax`",
        ),
        "model files",
    ),
    Row(
        "layer names",
        (
            "the attribute path (`state_dict` keys)",
            "every weight-carrying layer is given its canonical name (`name=`): nested layers do not prefix",
            "the attribute path (structural names)",
            "the attribute path: a variable's path is its canonical key with Flax's variable name at the end "
            "(`kernel` for `weight`)",
        ),
        "model files",
    ),
    Row(
        "initial weights",
        (
            "each layer's own initialiser, then `build` loads `canonical.default_params`",
            "`kernel_initializer=init()` (zeros: nothing random is drawn), then the same",
            "`initialize(mx.init.Zero())`, then the same",
            "`kernel_init=zeros` (Flax's layers want random keys, `nnx.Rngs(0)`, though nothing is drawn), "
            "then the same",
        ),
        "model files",
    ),
    Row(
        "saving a model",
        (
            "the `state_dict`",
            "a `.keras` file rebuilds the model: `register_keras_serializable`, `get_config`, `from_config`",
            "`save_parameters`",
            "the model's state (`nnx.state`): an Orbax checkpoint directory, or Flax's msgpack",
        ),
        "model files",
    ),
    Row(
        "graphs and scripting",
        (
            "`torch.jit.script` compiles `forward`: it calls no child by a computed name and reads "
            "no dataclass, so the network and its blocks are `nn.ModuleDict`s walked in order (the "
            "`state_dict` keys stay torchvision's), with the plan's names as lists, and training "
            "returns a fixed (logits, aux2, aux1)",
            "a functional `keras.Model`, as keras-hub builds backbones: `__init__` runs `call` on a "
            "`keras.Input` of open size and hands the graph to `keras.Model`; its outputs are fixed: "
            "the logits, or a dict of `logits`, `aux2`, `aux1`; the layers are made into a dict (`made`) "
            "that the graph is traced on and become attributes after `keras.Model.__init__` (on the torch "
            "backend a layer is a torch Module, which cannot be an attribute before it)",
            "`hybridize()` traces `hybrid_forward` once; the network's base (`Network`) traces it again "
            "when the training mode changes",
            "`jax.jit` traces a pure function of the split model (`nnx.split`: its structure and its state) "
            "once per input shape; eager runs op by op, each op compiled for its shapes, so fewer ops "
            "cost less: the input transform is one gather, not a concatenation of slices",
        ),
        "model files",
    ),
    Row(
        "imports and type hints",
        (
            "`import torch`; tensors annotated as `Tensor`",
            "`import keras`",
            "`import mxnet`; `from mxnet.gluon import nn`",
            "`import jax`, `jax.numpy as jnp`, `from flax import nnx`; arrays annotated as `jax.Array`",
        ),
        "model files",
    ),
]

# (row, pattern) applied to a statement of a model file; ("scope", name) rules apply to
# every line of a function of that name.
RULES: list[tuple[str, str]] = [
    ("layout", r"#.*\bN x \d"),
    ("layout", r"torch\.cat\(|ops\.concatenate\(|F\.concat\(|jnp\.concatenate\(|channel axis"),
    ("layout", r"x\[:, c : c \+ 1\]|x\[\.\.\., c : c \+ 1\]|slice_axis|x\[\.\.\., np\.asarray"),
    ("flatten before a dense layer", r"[Ff]latten|\((C, H, W|H, W, C)\) order|permut"),
    ("input channels", r"\bin_units=|nn\.Linear\(|self\.head = head|\.build\("),
    ("variable dtype", r"\bdtype\b"),
    ("training mode", r"training"),
    (
        "module API",
        r"^class \w+\((nn\.Module(Dict)?|layers\.Layer|Block|keras\.Model|nn\.HybridBlock|Network|nnx\.Module)\)",
    ),
    ("module API", r"def (forward|call|hybrid_forward|forward_stages|_stages|__call__)\(|self\._stages\("),
    (
        "module API",
        r"super\(\)\.__init__\(|add_module\(|setattr\(|-> (nn\.Module|layers\.Layer|nn\.HybridBlock|nnx\.Module)",
    ),
    ("operators", r"\b(F|ops|torch|jnp|jax\.nn|lax)\.(relu|cat|concat|concatenate|flatten)\b|\bops_\b|\bops\b"),
    ("layer names", r"\bname=|f\"\{block\.name\}"),
    ("initial weights", r"kernel_initializer"),
    ("saving a model", r"register_keras_serializable|config"),
    ("imports and type hints", r"^(import|from) |\bTensor\b|\bjax\.Array\b"),
    # JAX's explicit random keys: the one stream the network's dropouts draw from
    ("random numbers", r"\b[Rr]ngs\b|\bkey stream\b|\bstreams seeded\b"),
    (  # TorchScript's walks over children and plain lists, and what Keras's and Gluon's files do instead
        "graphs and scripting",
        r"TorchScript|self\.(starts|ends|trunk|taps|classifier|order|scale|shift|values|items)\b|^(taps|order|scale|shift):"
        r"|out\[\"aux2\"\], out\[\"aux1\"\]|\bout\[(name|stage\.name)\] = x|t = self\.plan\.transform|aux_for"
        r"|^for (branch in self\.branches|attr in branch):"
        r"|keras\.Input|image_shape|[Ff]unctional|summary\(\)|plot_model|\{\"logits\": |\(Network\)"
        r"|\bmade\b|\blayer\(|torch backend|Module\.__init__|become attributes"
        r"|eager compiles",  # JAX's eager mode compiles op by op: fewer ops
    ),
]
SCOPES: dict[str, str] = {
    "build": "input channels",  # Keras builds every weight from the spec's channel counts
    "get_config": "saving a model",
    "from_config": "saving a model",
}


def rows_for(statement: str, scope: str | None) -> set[str]:
    """The rows whose rules match a statement (whitespace-normalised) inside ``scope``."""
    found = {row for row, pattern in RULES if re.search(pattern, statement)}
    if scope in SCOPES:
        found.add(SCOPES[scope])
    return found
