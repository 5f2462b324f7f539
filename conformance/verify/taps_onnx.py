"""A user's ONNX file seen through ONNX Runtime: its parametrised nodes in graph order
(an exporter writes nodes in the order the forward pass ran them), initializers paired
by that order, and every intermediate tensor added as a graph output, so each node's
output is seen as a module's is through a hook. The file is read as ``port`` reads
one: its size bounded by what the largest variant can hold, no external data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import spec
from ..formats import bounds
from .pairing import CONV, DENSE, NORM, Layer
from .taps import Event, Run

FRAMEWORK = "onnx"
NORM_INPUTS = ("weight", "bias", "running_mean", "running_var")  # BatchNormalization's scale, B, mean, var


@dataclass
class OnnxModel:
    """An ONNX graph to verify; ``proto`` is changed only by :func:`load` (new weights)."""

    path: Path
    proto: Any
    session: Any = field(default=None, repr=False)


def is_model(model: object) -> bool:
    return isinstance(model, OnnxModel)


def version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def largest() -> bounds.Budget:
    """What a saved GoogLeNet of any variant may hold (at the most classes): the bound of
    every saved model verify reads, whatever variant it turns out to be."""
    plans = [spec.resolve(n, aux_logits=spec.VARIANTS[n].aux is not None) for n in spec.VARIANTS]
    budgets = [bounds.ceiling(p) for p in plans]
    return bounds.Budget(max(b.tensor for b in budgets), max(b.total for b in budgets), max(b.count for b in budgets))


def largest_file() -> int:
    """The most bytes a GoogLeNet ONNX file of any variant may hold."""
    return largest().total


def read(path: Path) -> OnnxModel:
    """The file, bounded and checked; ValueError naming it otherwise."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - runs it; refused now rather than after pairing
    except ImportError:
        raise ValueError(
            f"MODEL {path}: verifying an ONNX file needs onnx and onnxruntime: pip install -e '.[onnx]'"
        ) from None
    size, limit = path.stat().st_size, largest_file()
    if size > limit:
        raise ValueError(f"MODEL {path}: {size:,} bytes is more than any GoogLeNet holds ({limit:,})")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's errors on a damaged file: said with the file
        raise ValueError(f"MODEL {path}: not a readable ONNX file: {type(e).__name__}: {str(e)[:200]}") from None
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"MODEL {path}: initializer {init.name!r} keeps its data in another file")
    if len(proto.graph.input) < 1:
        raise ValueError(f"MODEL {path}: the graph has no input")
    return OnnxModel(path, proto)


def _initializers(model: OnnxModel) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {}
    for init in model.proto.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype.kind == "f":
            out[init.name] = value.astype(np.float32)
    return out


def channels(model: OnnxModel) -> int:
    dims = model.proto.graph.input[0].type.tensor_type.shape.dim
    return int(dims[1].dim_value) if len(dims) == 4 and dims[1].dim_value > 0 else 3


def state(model: OnnxModel) -> dict[str, np.ndarray]:
    return _initializers(model)


def layers(model: OnnxModel, x: np.ndarray) -> list[Layer]:
    """Conv, BatchNormalization, Gemm and MatMul (+ Add) nodes in graph order, their
    weights in canonical layouts (Gemm's and MatMul's (in, out) transposed)."""
    weights = _initializers(model)
    nodes = list(model.proto.graph.node)
    out = []
    for i, node in enumerate(nodes):
        inputs = [n for n in node.input]
        held = [n for n in inputs if n in weights]
        if not held:
            continue
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type == "Conv" and inputs[1] in weights:
            roles = dict(zip(("weight", "bias"), inputs[1:3], strict=False))
            tensors = {r: weights[k] for r, k in roles.items() if k in weights}
            out.append(Layer(name, CONV, tensors, roles, True, "Conv"))
        elif node.op_type == "BatchNormalization":
            roles = dict(zip(NORM_INPUTS, inputs[1:5], strict=True))
            out.append(Layer(name, NORM, {r: weights[k] for r, k in roles.items()}, roles, True, node.op_type))
        elif node.op_type == "Gemm" and inputs[1] in weights:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = weights[inputs[1]]
            tensors = {"weight": w if trans_b else w.T}
            roles = {"weight": inputs[1]}
            if len(inputs) > 2 and inputs[2] in weights:
                tensors["bias"], roles["bias"] = weights[inputs[2]], inputs[2]
            out.append(Layer(name, DENSE, tensors, roles, True, "Gemm"))
        elif node.op_type == "MatMul" and inputs[1] in weights and weights[inputs[1]].ndim == 2:
            tensors, roles = {"weight": weights[inputs[1]].T}, {"weight": inputs[1]}
            add = next((n for n in nodes[i + 1 :] if n.op_type == "Add" and node.output[0] in n.input), None)
            bias = next((k for k in (add.input if add else []) if k in weights), None)
            if bias is not None:
                tensors["bias"], roles["bias"] = weights[bias], bias
            out.append(Layer(name, DENSE, tensors, roles, True, "MatMul"))
        elif node.op_type not in ("Add", "Mul", "Sub", "Div", "Reshape", "Pad", "Concat", "Slice"):
            out.append(
                Layer(name, node.op_type, {k: weights[k] for k in held}, {k: k for k in held}, True, node.op_type)
            )
    return out


def load(model: OnnxModel, keys: Mapping[str, str], params: Mapping[str, np.ndarray]) -> None:
    """Canonical ``params`` into the graph's initializers (``keys``: canonical -> theirs),
    in each initializer's own layout (a Gemm's or MatMul's (in, out) where it has one)."""
    from onnx import numpy_helper

    theirs = {v: k for k, v in keys.items()}
    for init in model.proto.graph.initializer:
        if init.name in theirs:
            value = np.asarray(params[theirs[init.name]], np.float32)
            dims = tuple(init.dims)
            if value.shape != dims:
                value = value.T if value.T.shape == dims else value.reshape(dims)
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    model.session = None


def _session(model: OnnxModel) -> tuple[Any, list[str], list[str]]:
    """A session returning the graph's outputs, then every node's output."""
    import onnx
    import onnxruntime

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    inferred = onnx.shape_inference.infer_shapes(proto)
    typed = {v.name: v for v in inferred.graph.value_info}
    own = [o.name for o in proto.graph.output]
    extra = [o for n in proto.graph.node for o in n.output if o in typed and o not in own]
    proto.graph.output.extend([typed[o] for o in extra])
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # every node as written
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, own, extra


def run(model: OnnxModel, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    session, own, extra = _session(model)
    values = session.run(None, {model.proto.graph.input[0].name: x})
    by_name = dict(zip(own + extra, values, strict=True))
    events: list[Event] = []
    for i, node in enumerate(model.proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in calls:
            events.append(Event(name))
        for o in node.output:
            value = by_name.get(o)
            if value is not None and o not in own and tuple(value.shape) in shapes:
                events.append(Event(name, np.asarray(value, np.float32)))
    return Run([np.asarray(by_name[o], np.float32) for o in own], events)
