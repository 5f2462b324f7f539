"""GoogLeNet in MXNet Gluon: the shared interface (see ``conformance.interface``)."""

from __future__ import annotations

import json
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

from conformance import frameworks, interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

if "bool" not in np.__dict__:  # mxnet 1.9.1 uses numpy.bool, which numpy 1.24 removed
    np.bool = bool  # type: ignore[attr-defined]


def _share_cores() -> None:
    """In a KVStore dist_sync process (``distributed.py``) the import fixes MXNet's thread
    count, so it is set before: DMLC_NUM_WORKER workers share the cores; the scheduler and
    the server (whose loop the import itself runs) only move and sum bytes: one thread. A
    user's OMP_NUM_THREADS or MXNET_OMP_MAX_THREADS is kept."""
    role = os.environ.get("DMLC_ROLE")
    if role and "OMP_NUM_THREADS" not in os.environ:
        workers = max(1, int(os.environ.get("DMLC_NUM_WORKER") or 1))
        share = frameworks.usable_cores() // workers if role == "worker" else 1
        os.environ.setdefault("MXNET_OMP_MAX_THREADS", str(max(1, share)))


_share_cores()
frameworks.use_every_core()  # before the import: MXNet would take half the cores, PyTorch's too

# Everything below imports mxnet, so it comes after the two settings above (ruff: E402).
import mxnet as mx

from .engine import onnx_mapping
from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "mxnet"
INTERFACE_VERSION = interface.VERSION
__all__ = [
    "MODES",
    "GoogLeNet",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "stages",
    "to_canonical",
    "to_gluon_export",
    "to_onnx",
    "version",
]


# hybrid: the model's symbolic graph in a SymbolBlock sharing its parameters,
# hybridized with static memory and shapes (one per input shape and outputs), so
# MXNet runs it as one cached graph; eager (imperative Gluon) dispatches op by op. The
# model itself is never hybridized, so eager training is unaffected.
# onednn: that graph partitioned by MXNet's oneDNN subgraph backend (``optimize_for``):
# conv + BatchNorm + ReLU and the concatenations fused into oneDNN operators. An extra:
# the partitioning is paid per input shape, and ``check --modes all`` checks it.
MODES = ("hybrid", interface.EAGER, "onednn")
# The oneDNN subgraph backend's name in MXNet 1.9 (src/operator/subgraph/mkldnn); a name
# MXNet does not know is only logged, and the graph is left as it was.
ONEDNN_BACKEND = "MKLDNN"


def version() -> str:
    return f"mxnet {mx.__version__}"


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """An initialised GoogLeNet holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    model = GoogLeNet(resolve(variant, num_classes, aux_logits, transform_input))
    model.initialize(mx.init.Zero(), ctx=mx.cpu())  # overwritten below
    if dtype != "float32":
        model.cast(dtype)
    from_canonical(model, default_params(model.plan))
    return model


def _dtype(model: GoogLeNet) -> np.dtype:
    return np.dtype(next(iter(model.collect_params().values())).dtype)


class _Hybrid:
    """The model's graph with some outputs, hybridized in a SymbolBlock that shares the
    model's parameters (so it sees their updates) but does not hold the model. A
    SymbolBlock outlives its last Python reference in Gluon 1.9 (its static memory stays
    with it), so when this goes it drops the block's graph and memory."""

    def __init__(self, model: GoogLeNet, with_aux: bool, every_stage: bool, fuse: mx.nd.NDArray | None = None) -> None:
        data = mx.sym.var("data", dtype=_dtype(model))
        out = model.forward_stages(data, with_aux=with_aux)
        names = interface.output_names(model.plan, with_aux, every_stage)
        graph = _onednn_relu(mx.sym.Group([out[k] for k in names]))
        self.block = mx.gluon.SymbolBlock(graph, data, params=model.collect_params())
        # Static memory and shapes: Gluon plans the graph's memory once. Not for every stage:
        # that plan keeps all of them besides what it works in (about twice the memory
        # above the outputs), and the plan changes no operator.
        static = not every_stage
        if fuse is None:
            self.block.hybridize(static_alloc=static, static_shape=static)
        else:
            _fuse(self.block, fuse)
        weakref.finalize(self, self.block.hybridize, False)

    def __call__(self, data: mx.nd.NDArray) -> list:
        values = self.block(data)
        return values if isinstance(values, list) else [values]


def _onednn_relu(graph: mx.sym.Symbol) -> mx.sym.Symbol:
    """``graph`` with each ``relu`` operator as ``Activation(act_type="relu")``, the same
    max(x, 0): MXNet's ``relu`` has no oneDNN kernel, so it turns each oneDNN-layout map
    back into NCHW and runs apart, and the oneDNN backend fuses only ``Activation`` into
    the convolution before it. The model keeps ``F.relu`` (a mirror of the other
    frameworks' layers); only the compiled graph is rewritten."""
    nodes = json.loads(graph.tojson())
    for node in nodes["nodes"]:
        if node["op"] == "relu":
            node["op"], node["attrs"] = "Activation", {"act_type": "relu"}
    return mx.sym.load_json(json.dumps(nodes))


def _fuse(block: mx.gluon.SymbolBlock, data: mx.nd.NDArray) -> None:
    """Partition ``block``'s graph for inputs like ``data`` with the oneDNN backend, and
    say so (:class:`conformance.interface.Unsupported`) where it fused nothing: a graph
    left as it was would be checked and timed as the hybrid mode under another name.
    No static memory: with it, a fused conv keeps the BatchNorm it folded into its
    weights on the first call, and runs with those after new weights are loaded; without
    it, each call folds the parameters as they are."""
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        raise interface.Unsupported(f"this MXNet build has no oneDNN ({version()})")
    block.optimize_for(data, backend=ONEDNN_BACKEND, static_alloc=False, static_shape=False)
    graph = block._cached_graph[1]  # the partitioned symbol Gluon runs from now on
    if not any(op.startswith("_sg_mkldnn") for op in _operators(graph)):
        raise interface.Unsupported(f"the {ONEDNN_BACKEND} backend fused no operator of this graph")


def _operators(graph: mx.sym.Symbol) -> list[str]:
    return [node["op"] for node in json.loads(graph.tojson())["nodes"]]


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool, mode: str, every_stage: bool) -> dict[str, np.ndarray]:
    # Outside autograd.record() Gluon runs BatchNorm and Dropout in inference mode.
    data = mx.nd.array(x, dtype=np.float32)
    names = interface.output_names(model.plan, with_aux, every_stage)
    if mode == "hybrid":
        graph = interface.compiled(
            model, (mode, x.shape, with_aux, every_stage), lambda: _Hybrid(model, with_aux, every_stage)
        )
        out = dict(zip(names, graph(data), strict=True))
    elif mode == "onednn":
        graph = interface.compiled(
            model, (mode, x.shape, with_aux, every_stage), lambda: _Hybrid(model, with_aux, every_stage, fuse=data)
        )
        out = dict(zip(names, graph(data), strict=True))
    else:
        out = model.forward_stages(data, with_aux=with_aux)
    return {k: out.pop(k).asnumpy() for k in names}  # each NDArray freed once copied


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False, mode: str = MODES[0]):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, MODES, model, x, aux, mode)


def stages(model: GoogLeNet, x: np.ndarray, mode: str = MODES[0]) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, MODES, model, x, mode)


def to_onnx(model: GoogLeNet, shape: tuple[int, ...], with_aux: bool, every_stage: bool) -> bytes:
    """The model in inference mode as an ONNX graph for NCHW inputs of ``shape``, whose
    outputs are ``interface.output_names``: ``mx.onnx.export_model`` on the model's
    symbolic graph. Needs the ``onnx`` extra."""
    data = mx.sym.var("data", dtype=_dtype(model))
    out = model.forward_stages(data, with_aux=with_aux)
    graph = mx.sym.Group([out[k] for k in interface.output_names(model.plan, with_aux, every_stage)])
    params = {p.name: p.data() for p in model.collect_params().values()}
    with tempfile.TemporaryDirectory() as tmp, onnx_mapping():
        path = Path(tmp) / "model.onnx"
        mx.onnx.export_model(graph, params, [shape], [np.float32], str(path))
        return path.read_bytes()


def to_gluon_export(model: GoogLeNet) -> dict[str, bytes]:
    """``HybridBlock.export``'s pair, as bytes: ``symbol.json`` (the inference graph,
    input ``data``, any batch and size the variant admits; it returns the logits, so the
    aux heads are not in it) and ``params`` (what ``SymbolBlock.imports`` reads). The
    model is hybridized for the export, then returned to imperative mode."""
    p = model.plan
    x = mx.nd.zeros((1, p.in_channels, p.input_size, p.input_size), dtype=_dtype(model))
    model.hybridize()
    try:
        model(x)  # export needs the graph of one forward
        with tempfile.TemporaryDirectory() as tmp:
            model.export(str(Path(tmp) / "model"))
            return {
                "symbol.json": (Path(tmp) / "model-symbol.json").read_bytes(),
                "params": (Path(tmp) / "model-0000.params").read_bytes(),
            }
    finally:
        model.hybridize(False)


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running statistics): Gluon marks the statistics
    with ``grad_req='null'``, and the fixed gamma of a BatchNorm without scale (TF-slim's),
    which is no parameter of the network and is not counted."""
    params = model.collect_params().values()
    trainable = sum(int(np.prod(p.shape)) for p in params if p.grad_req != "null")
    stats = ("running_mean", "running_var")
    return trainable, sum(int(np.prod(p.shape)) for p in params if p.grad_req == "null" and p.name.endswith(stats))
