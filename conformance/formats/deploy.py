"""Deployment formats: a model as its runtime serves it, verified in a fresh process
that loads the file the way that runtime's users do, without this suite's code
(``fresh.py``, run with ``python -I`` and the suite's packages blocked).

| format           | files                               | written / loaded with                       | aux heads  |
|------------------|-------------------------------------|---------------------------------------------|------------|
| ``onnx``         | ``.onnx``                           | ``torch.onnx.export`` / onnxruntime         | outputs    |
| ``torchscript``  | ``.pt`` (``--to torchscript``)      | ``torch.jit.script`` / ``torch.jit.load``   | a method   |
| ``exported``     | ``.pt2``                            | ``torch.export.save`` / ``.load``           | not in it  |
| ``savedmodel``   | a directory (``--to savedmodel``)   | Keras ``model.export`` / ``tf.saved_model`` | outputs    |
| ``gluon-export`` | ``-symbol.json`` + ``-0000.params`` | ``export`` / ``SymbolBlock.imports``        | not in it  |

Every one takes any batch and any input size the variant admits (a flattened
classifier, as ``inception_mnist``'s, fixes it). ONNX and the Gluon pair are also read: their
weights by name (ONNX initializers; the Gluon pair by its graph's inputs, in order)
back to canonical tensors, bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..canonical import Params, canonical_shapes
from ..reading import Tensor
from ..spec import Plan, with_options
from . import bounds, naming, onnxwire
from .base import LOADING_MXNET, BackendModel, FileContents, Format, PortError, Written, backend, built, error_line
from .gluon import read_params

FRESH = Path(__file__).with_name("fresh.py")
MAX_SYMBOL = 4 << 20  # a GoogLeNet's -symbol.json is ~150 KB
ONNX_HINT = "pip install -e '.[onnx]'"
# Bounds of an ONNX file's graph, per tensor the network may have (bounds.Budget.count,
# itself three times the network's tensors): its export holds about 1.4 nodes and 50
# protobuf fields per tensor.
ONNX_NODES = 16
ONNX_FIELDS = 1024


# --------------------------------------------------------------------------------------
# The runtime in a fresh process, behind what port's verification calls
# --------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A deployment file, loaded on demand in a fresh process (``forward``)."""

    path: Path
    plan: Plan
    kind: str  # fresh.py's KIND
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # as the runtime exposed them


@dataclass
class Runtime:
    """The parts of ``conformance.interface`` port's verification uses, for a file run
    by its own runtime in a fresh process."""

    name: str
    carries_aux: bool  # the file's graph returns the aux logits
    # Canonical tensors of the loaded file (None: it keeps no weights by name).
    canonical: Callable[[Loaded], Params | None]

    def forward(self, model: Loaded, x: np.ndarray, aux: bool = False):
        outputs, model.weights = run_fresh(model.kind, model.path, x, aux and self.carries_aux)
        if not (aux and self.carries_aux):
            return outputs["logits"]
        return tuple(outputs[name] for name in ("logits", *(h.name for h in reversed(model.plan.aux))))

    def to_canonical(self, model: Loaded) -> Params | None:
        """The file's tensors in canonical order (a graph lists them in its own order),
        then any the plan does not know (which the comparison reports)."""
        found = self.canonical(model)
        if found is None:
            return None
        order = [k for k in canonical_shapes(model.plan) if k in found]
        return {k: found[k] for k in [*order, *(k for k in found if k not in order)]}


def run_fresh(kind: str, path: Path, x: np.ndarray, aux: bool) -> tuple[dict[str, np.ndarray], Params]:
    """``fresh.py`` on ``path`` with input ``x``: (outputs, weights by the runtime's names).
    Raises RuntimeError with the child's last error line."""
    with tempfile.TemporaryDirectory(prefix="conformance-fresh-") as tmp:
        source, target = Path(tmp) / "x.npy", Path(tmp) / "out.npz"
        np.save(source, x)
        command = [sys.executable, "-I", str(FRESH), kind, str(Path(path).resolve()), str(source), str(target)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [*command, *(["--aux"] if aux else [])], cwd=tmp, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(f"a fresh process could not load and run it: {(lines or ['?'])[-1][:400]}")
        with np.load(target, allow_pickle=False) as z:
            outputs = {k[4:]: z[k] for k in z.files if k.startswith("out:")}
            weights = {k[2:]: z[k] for k in z.files if k.startswith("w:")}
    return outputs, weights


def _state_dict(model: Loaded) -> Params:
    return {k: v for k, v in model.weights.items() if not k.endswith("num_batches_tracked")}


def _onnx_canonical(model: Loaded) -> Params:
    contents = read_onnx(model.path, model.plan)
    return {k: t.load() for k, t in contents.tensors.items()}


def _gluon_canonical(model: Loaded) -> Params:
    names = gluon_names(model.path, model.plan)
    return {names[k]: v for k, v in model.weights.items() if k in names}


RUNTIMES = {
    "onnx": Runtime("onnxruntime", True, _onnx_canonical),
    "torchscript": Runtime("torch.jit.load", True, _state_dict),
    "exported": Runtime("torch.export.load", False, _state_dict),
    "savedmodel": Runtime("tf.saved_model.load", True, lambda model: None),
    "gluon": Runtime("SymbolBlock.imports", False, _gluon_canonical),
}


def loader(kind: str) -> Callable[[Path, Plan, str, BackendModel | None], BackendModel]:
    def load(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
        return RUNTIMES[kind], Loaded(Path(path), plan, kind)

    return load


load_onnx, load_torchscript, load_exported = loader("onnx"), loader("torchscript"), loader("exported")
load_savedmodel, load_gluon = loader("savedmodel"), loader("gluon")


# --------------------------------------------------------------------------------------
# Writers: bytes, or {relative path: bytes} for a directory or a pair of files
# --------------------------------------------------------------------------------------


def write_onnx(params: Params, plan: Plan) -> Written:
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise PortError(f"--to onnx: {package} is not installed; install with: {ONNX_HINT}") from None
    b, model = built("torch", plan, params)
    return b.to_onnx_deployable(model), None


def write_torchscript(params: Params, plan: Plan) -> Written:
    b, model = built("torch", plan, params)
    return b.to_torchscript(model), None


def write_exported(params: Params, plan: Plan) -> Written:
    b, model = built("torch", plan, params)
    return b.to_exported_program(model), None


def write_savedmodel(params: Params, plan: Plan) -> Written:
    b, model = built("keras", plan, params)
    with tempfile.TemporaryDirectory(prefix="conformance-savedmodel-") as tmp:
        b.to_savedmodel(model, Path(tmp) / "model")
        return tree(Path(tmp) / "model"), None


def write_gluon(params: Params, plan: Plan) -> Written:
    backend("mxnet")
    import mxnet as mx

    with mx.name.NameManager():  # fresh counters: conv0_weight, whatever this process built before
        b, model = built("mxnet", plan, params)
    pair = b.to_gluon_export(model)
    return {"-symbol.json": pair["symbol.json"], "-0000.params": pair["params"]}, None


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path; a directory as ``path/``."""
    out: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel + "/" if path.is_dir() else rel] = b"" if path.is_dir() else path.read_bytes()
    return out


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


def read_onnx(path: Path, plan: Plan) -> FileContents:
    """The initializers of an ONNX file by name: the suite's own (canonical names) and
    the ONNX judge's (``net.`` before them). A graph whose BatchNorm was folded into
    the convolutions (the exporter's ``optimize=True``, ONNX Runtime's optimiser) is
    refused: the folded weights cannot be separated into canonical ones again."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise PortError(f"{path}: reading an .onnx file needs onnx; install with: {ONNX_HINT}") from None
    limit = bounds.budget(plan)
    if path.stat().st_size > limit.total:
        raise PortError(
            f"{path}: {path.stat().st_size:,} bytes is more than {plan.variant.name} with {plan.num_classes} classes "
            f"can hold ({limit.describe()}); pass --num-classes if it has more classes"
        )
    count = bounds.ceiling(plan).count
    onnxwire.check(path, onnxwire.Bounds(ONNX_NODES * count, count, ONNX_FIELDS * count))
    proto = onnx.load(str(path), load_external_data=False)
    notes: list[str] = []
    tensors: dict[str, Tensor] = {}
    constants = 0
    prefixed = 0
    names: set[str] = set()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise PortError(f"{path}: initializer {init.name!r} keeps its data in another file; give a single file")
        if init.name in names:
            raise PortError(
                f"{path}: two initializers are named {init.name!r}; which one a runtime uses is not defined "
                f"(ONNX Runtime takes the first): give a file with one tensor per name"
            )
        names.add(init.name)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        if dtype.kind != "f":  # shape constants of the graph, not weights
            constants += 1
            continue
        name = init.name
        if name.startswith("net."):
            name, prefixed = name[len("net.") :], prefixed + 1
        if name in tensors:
            raise PortError(
                f"{path}: initializers {name!r} and {init.name!r} name the same weight once 'net.' is removed; "
                f"give a file with one tensor per name"
            )
        tensors[name] = Tensor(tuple(int(d) for d in init.dims), dtype, _array(numpy_helper, init))
    if prefixed:
        notes.append(f"removed the 'net.' prefix of {prefixed} initializers (an export of a wrapped model)")
    if constants:
        notes.append(f"left out {constants} integer constants of the graph (not weights)")
    if plan.variant.convs.norm is not None and not any(k.endswith("running_mean") for k in tensors):
        ops = {n.op_type for n in proto.graph.node}
        if "BatchNormalization" not in ops:
            raise PortError(
                f"{path}: its graph has no BatchNormalization ({plan.variant.name} has BatchNorm): it was folded into "
                f"the convolutions (torch.onnx.export(..., optimize=True), or ONNX Runtime's optimiser), and "
                f"folded weights cannot be separated again; export with optimize=False (port's --to onnx does)"
            )
    bounds.check_sizes(path, tensors, bounds.ceiling(plan))
    order = [n.op_type for n in proto.graph.node]
    return FileContents(tensors, naming.detect(tensors), notes, transform_input=transformed(order, "Conv"))


def transformed(ops: list[str], conv: str) -> bool:
    """Whether a graph transforms its input before its first convolution: the input
    transform reorders channels, scales and shifts each, and concatenates them again;
    without one the graph reaches the first convolution with no Concat."""
    first = ops.index(conv) if conv in ops else len(ops)
    return "Concat" in ops[:first]


def _array(numpy_helper: Any, init: Any) -> Callable[[], np.ndarray]:
    return lambda: np.array(numpy_helper.to_array(init))  # a copy: to_array gives a read-only view


def params_of(symbol: Path) -> Path:
    """The ``-0000.params`` beside a ``-symbol.json``."""
    return symbol.with_name(symbol.name.removesuffix("-symbol.json") + "-0000.params")


_REFERENCE: dict[Plan, list[tuple[str, str]]] = {}


def _graph_inputs(symbol_json: str) -> list[str]:
    import mxnet as mx

    return [n for n in mx.sym.load_json(symbol_json).list_inputs() if n != "data"]


def _reference(plan: Plan) -> list[tuple[str, str]]:
    """(Gluon name, canonical key) of each input of this suite's export of ``p``
    (without aux heads: the exported graph returns the logits), in the graph's order."""
    q = with_options(plan, aux_logits=False)
    if q not in _REFERENCE:
        b, model = built("mxnet", q)
        from impl_mxnet.weights import located

        by_name = {param.name: key for key, param in located(model, q)}
        names = _graph_inputs(b.to_gluon_export(model)["symbol.json"].decode())
        _REFERENCE[q] = [(n, by_name[n]) for n in names]
    return _REFERENCE[q]


def gluon_names(symbol: Path, plan: Plan) -> dict[str, str]:
    """File name -> canonical key for an exported Gluon pair of ``p``. Gluon names the
    parameters by a process-wide counter (``conv57_weight`` when 57 convolutions were
    made before), so they are matched by position among the graph's inputs against
    this suite's export of the same plan, checked layer type by layer type."""
    size = symbol.stat().st_size
    if size > MAX_SYMBOL:
        raise PortError(f"{symbol}: {size:,} bytes; a GoogLeNet's graph is ~150 KB (at most {MAX_SYMBOL:,})")
    text = check_symbol(symbol)
    backend("mxnet")
    try:
        theirs = _graph_inputs(text)
    except Exception as e:  # noqa: BLE001 - MXNet's parser: its message, with the file
        raise PortError(f"{symbol}: not an MXNet graph: {type(e).__name__}: {error_line(e)}") from None
    ours = _reference(plan)

    def kind(name: str) -> str:
        return re.sub(r"\d+", "", name)

    differ = [i for i, (a, (b, _)) in enumerate(zip(theirs, ours, strict=False)) if kind(a) != kind(b)]
    if differ or len(theirs) != len(ours):
        at = differ[0] if differ else min(len(theirs), len(ours))
        raise PortError(
            f"{symbol}: its graph is not {plan.variant.name}'s as this suite exports it: {len(theirs)} parameters "
            f"(expected {len(ours)}), first difference at input {at} "
            f"({theirs[at] if at < len(theirs) else 'none'}, expected {ours[at][0] if at < len(ours) else 'none'})"
        )
    return {a: key for a, (_, key) in zip(theirs, ours, strict=True)}


def check_symbol(symbol: Path) -> str:
    """The text of a ``-symbol.json`` whose graph is whole: JSON with a list of nodes,
    every node id it uses (inputs, ``arg_nodes``, ``heads``) one of them. MXNet's
    parser reads past a truncated file and checks ids with a C++ traceback."""
    try:
        text = symbol.read_bytes().decode("utf-8")
        graph = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PortError(f"{symbol}: not an MXNet graph: not JSON ({str(e)[:120]}; truncated or corrupt)") from None
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("op"), str) for n in nodes):
        raise PortError(f"{symbol}: not an MXNet graph: expected a JSON object whose 'nodes' is a list of operators")
    used = [(f"node {i}'s input", entry) for i, n in enumerate(nodes) for entry in n.get("inputs", [])]
    used += [("'heads'", entry) for entry in graph.get("heads", [])]
    used += [("'arg_nodes'", [entry]) for entry in graph.get("arg_nodes", [])]
    for what, entry in used:
        node = entry[0] if isinstance(entry, list) and entry else None
        if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < len(nodes):
            raise PortError(
                f"{symbol}: not a whole MXNet graph: {what} refers to node {str(node)[:20]}; "
                f"the graph has nodes 0 to {len(nodes) - 1}"
            )
    return text


def read_gluon(symbol: Path, plan: Plan) -> FileContents:
    """An exported Gluon pair, named by its ``-symbol.json``: the ``-0000.params``
    beside it, its names matched to canonical keys through the graph."""
    params = params_of(symbol)
    if not params.is_file():
        raise PortError(f"{symbol}: its parameters {params.name} are not beside it (HybridBlock.export writes both)")
    names = gluon_names(symbol, plan)
    contents = read_params(params, plan)
    unknown = [k for k in contents.tensors if k not in names]
    tensors = {names.get(k, k): t for k, t in contents.tensors.items()}
    notes = [f"read {params.name}; names matched through the graph of {symbol.name}"]
    if unknown:
        notes.append(f"{len(unknown)} arrays are not inputs of the graph: {unknown[:3]}")
    ops = [node["op"] for node in json.loads(check_symbol(symbol))["nodes"]]
    return FileContents(tensors, "canonical", notes, transform_input=transformed(ops, "Convolution"))


def not_read(description: str, weights: str) -> Callable[[Path, Plan], FileContents]:
    """A format port writes only: reading it would run its graph's loader (TorchScript
    code, a TensorFlow graph) to get weights that ``weights`` gives by name."""

    def read(path: Path, plan: Plan) -> FileContents:
        raise PortError(f"{path}: {description} files are written here, not read; {weights}, and port that")

    return read


read_torchscript: Callable[[Path, Plan], FileContents] = not_read(
    "TorchScript", "torch.save(torch.jit.load(path).state_dict(), 'model.pth') saves its weights"
)
read_exported: Callable[[Path, Plan], FileContents] = not_read(
    "ExportedProgram", "torch.save(torch.export.load(path).state_dict, 'model.pth') saves its weights"
)
read_savedmodel: Callable[[Path, Plan], FileContents] = not_read(
    "SavedModel", "port the weights it was exported from (.keras, .weights.h5)"
)


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("onnx", (".onnx",), "ONNX model", "torch", ("onnx",),
           read_onnx, write_onnx, load_onnx,
           loading="import onnxruntime; session = onnxruntime.InferenceSession({path}, "
                   "providers=['CPUExecutionProvider'])  # input 'x' (NCHW), outputs 'logits' (, 'aux2', 'aux1')",
           keeps_transform="the graph"),
    # Only by name (--to torchscript): .pt is a state_dict unless told.
    Format("torchscript", (".pt",), "TorchScript module", "torch", ("torchscript",),
           read_torchscript, write_torchscript, load_torchscript,
           loading="import torch; model = torch.jit.load({path})  "
                   "# model.forward_stages(x, with_aux=True) gives the aux logits",
           keeps_transform="the graph", readable=False),
    Format("exported", (".pt2",), "PyTorch ExportedProgram", "torch", ("exported",),
           read_exported, write_exported, load_exported,
           loading="import torch; model = torch.export.load({path}).module()",
           limits="aux heads: not in the graph (it returns the logits, as the model does in eval); "
                  "their weights stay in its state_dict",
           keeps_transform="the graph", readable=False),
    # TensorFlow alone: the two variables keep its start-up lines (absl, oneDNN, CPU
    # features) off stderr; TF_ENABLE_ONEDNN_OPTS=0 runs TensorFlow's own kernels.
    Format("savedmodel", (), "TensorFlow SavedModel", "keras", (),
           read_savedmodel, write_savedmodel, load_savedmodel,
           loading="import os; os.environ.update(TF_CPP_MIN_LOG_LEVEL='2', TF_ENABLE_ONEDNN_OPTS='0'); "
                   "import tensorflow as tf; model = tf.saved_model.load({path})  # model.serve(x), x NHWC",
           layout="directory",
           limits="weights: none under canonical names (a SavedModel keeps graph variables): its outputs prove it",
           keeps_transform="the graph", readable=False),
    Format("gluon-export", ("-symbol.json",), "Gluon exported model", "mxnet", ("mxnet-symbol",),
           read_gluon, write_gluon, load_gluon, names=("-symbol.json",),
           loading=LOADING_MXNET + "model = mxnet.gluon.SymbolBlock(mxnet.sym.load({path}), "
                   "mxnet.sym.var('data', dtype='float32')); model.collect_params().load({params})  "
                   "# the input's dtype given: SymbolBlock.imports leaves it open and warns",
           layout="pair", limits="aux heads: not in the pair (the inference graph returns the logits)",
           keeps_transform="the graph"),
)
# fmt: on
