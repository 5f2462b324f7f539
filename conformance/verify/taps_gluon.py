"""A user's MXNet Gluon model: a ``Block`` (a ``HybridBlock`` hybridized or not) or an
exported symbol pair (``NAME-symbol.json`` + ``NAME-0000.params``, read here as ``port``
reads one and run as a ``SymbolBlock``).

Gluon keeps the canonical layouts (NCHW inputs, OIHW kernels, dense (out, in)), so the
tensors are taken as they are; a BatchNorm's ``gamma``, ``beta``, ``running_mean`` and
``running_var`` are its scale, shift and statistics (its gamma is left out where the
layer ignores it: ``scale=False``, the operator's ``fix_gamma``).

Where the stages come from:

* a Block run eagerly (not hybridized): every child block's output through forward
  hooks, and the order the parametrised blocks are called in through forward pre-hooks,
  as the torch adapter does;
* a hybridized HybridBlock and a symbol pair: Gluon runs a cached graph and calls no
  child, so the graph itself is read: its symbol (the block called on a symbolic input)
  lists the operators in the order the forward pass made them, and every internal
  output (``get_internals``) is run as an output of a ``SymbolBlock`` sharing the
  model's parameters.

Nothing of the model is changed but, with ``--weights``, the values of its parameters;
hooks are removed after each pass. MXNet is imported only for a model that is already
a Gluon object (``mxnet`` in ``sys.modules``), or when a symbol pair is read.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import mxnet_reading
from ..formats import bounds, deploy
from ..formats.base import PortError, backend
from . import taps_onnx
from .pairing import CONV, DENSE, NORM, Layer, kind_of
from .taps import Event, Run

FRAMEWORK = "gluon"
NORM_PARAMS = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
SYMBOL_NORM = ("weight", "bias", "running_mean", "running_var")  # BatchNorm's inputs after data, in order
# The operators of any GoogLeNet and of the mistakes a port makes: a graph with another
# (one that makes a tensor of a shape its attributes declare, say) is refused unread.
OPERATORS = {
    "null", "Convolution", "BatchNorm", "Activation", "relu", "LeakyReLU", "Pooling", "Concat", "concat",
    "FullyConnected", "Flatten", "flatten", "Dropout", "LRN", "softmax", "SoftmaxActivation", "log_softmax",
    "elemwise_add", "_plus", "_Plus", "broadcast_add", "_mul_scalar", "_plus_scalar", "_minus_scalar",
    "_div_scalar", "Reshape", "reshape", "slice_axis", "identity", "_copy", "clip", "Pad", "reverse",
    "_contrib_AdaptiveAvgPooling2D", "Cast", "amp_cast",
}  # fmt: skip


# One-input operators that keep a tensor's values (reordered or cast): a parameter seen
# through them is still that parameter.
KEEPING = {"reverse", "_copy", "identity", "Cast", "amp_cast"}


def _mx() -> Any:
    """MXNet, imported the suite's way (it needs numpy's old ``bool`` alias set first)."""
    try:
        backend("mxnet")
    except PortError as e:
        raise ValueError(f"MODEL: a Gluon model needs MXNet: {e}") from None
    import mxnet

    return mxnet


def is_model(model: object) -> bool:
    mx = sys.modules.get("mxnet")  # a Gluon object exists only once MXNet was imported
    return mx is not None and isinstance(model, mx.gluon.Block)


def version() -> str:
    return f"mxnet {_mx().__version__}"


# --------------------------------------------------------------------------------------
# The model's parameters
# --------------------------------------------------------------------------------------


def _params(model: Any) -> dict[str, Any]:
    """The user's key -> Parameter: the structural names ``save_parameters`` writes
    (``0.1.weight``), or a symbol pair's own names (those in its ``.params`` file)."""
    mx = _mx()
    if isinstance(model, mx.gluon.SymbolBlock):
        return {p.name: p for p in model.collect_params().values()}
    return dict(model._collect_params_with_prefix())


def _value(param: Any) -> np.ndarray:
    try:
        return param.data().asnumpy().astype(np.float32)
    except Exception as e:  # noqa: BLE001 - MXNet's "not initialized" / deferred-init errors
        raise ValueError(
            f"MODEL: your Gluon model's parameter {param.name!r} holds no values yet ({type(e).__name__}): "
            f"call net.initialize() and run it once on an input of your data's shape (or load its weights) "
            f"before returning it"
        ) from None


def _shape(param: Any) -> tuple[int, ...]:
    """A parameter's shape: its data's once it holds some (a SymbolBlock's parameters
    declare none before their file is loaded, and keep declaring none after)."""
    if getattr(param, "_data", None) is not None:
        return tuple(param.data().shape)
    return tuple(param.shape or ())


def channels(model: Any) -> int:
    """The input channels: the first convolution's (three where the model has none).
    Every parameter must hold values by now (verify reads the model's own weights)."""
    for param in _params(model).values():
        if getattr(param, "_data", None) is None and not getattr(param, "_deferred_init", ()):
            _value(param)  # says what to do
    for param in _params(model).values():
        shape = _shape(param)
        if len(shape) == 4:
            if shape[1] == 0:
                raise ValueError(
                    f"MODEL: your Gluon model's first convolution does not know its input channels yet "
                    f"({param.name!r} is {shape}, deferred): give it in_channels, or run the model once "
                    f"on an input of your data's shape before returning it"
                )
            return int(shape[1])
    return 3


def state(model: Any) -> dict[str, np.ndarray]:
    _mx().nd.waitall()  # the user's last inference call may still be re-laying weights (_predicting)
    return {k: _value(p) for k, p in _params(model).items()}


def load(model: Any, keys: Mapping[str, str], params: Mapping[str, np.ndarray]) -> None:
    """Write canonical ``params`` into the user's parameters (``keys``: canonical -> theirs);
    Gluon's layouts are the canonical ones."""
    mx = _mx()
    found = _params(model)
    for canonical, theirs in keys.items():
        target = found[theirs]
        value = np.asarray(params[canonical], np.float32).reshape(_shape(target))
        target.set_data(mx.nd.array(value, dtype="float32"))


# --------------------------------------------------------------------------------------
# Eager blocks: hooks
# --------------------------------------------------------------------------------------


def _blocks(block: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every block under ``block`` by structural name (``2.0.p1_1``), the model as ""."""
    yield prefix, block
    for name, child in block._children.items():
        yield from _blocks(child, f"{prefix}.{name}" if prefix else name)


def _own(name: str, block: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A block's own parameters by role (weight, bias, running_mean, running_var) and
    the user's key of each; a BatchNorm's gamma left out where it is fixed at 1."""
    prefix = f"{name}." if name else ""
    own = dict(block._reg_params)
    if "running_mean" in own and getattr(block, "_kwargs", {}).get("fix_gamma", False):
        own.pop("gamma", None)
    norm = "running_mean" in own
    roles = {(NORM_PARAMS[k] if norm and k in NORM_PARAMS else str(k)): str(k) for k in own}
    return {r: _value(own[k]) for r, k in roles.items()}, {r: prefix + k for r, k in roles.items()}


def _hybridized(model: Any) -> bool:
    mx = _mx()
    return isinstance(model, mx.gluon.SymbolBlock) or (
        isinstance(model, mx.gluon.HybridBlock) and bool(getattr(model, "_active", False))
    )


def _input(x: np.ndarray) -> Any:
    return _mx().nd.array(x, dtype="float32")


@contextlib.contextmanager
def _predicting() -> Iterator[None]:
    """Inference behaviour (running statistics, no dropout), settled on exit: MXNet's
    oneDNN convolution re-lays its weight in place after an inference call, in an
    operation it queues while running, which a later read of that weight does not wait
    for (apache/mxnet#15555); a read that overlaps it sees the values permuted."""
    mx = _mx()
    try:
        with mx.autograd.predict_mode():
            yield
    finally:
        mx.nd.waitall()


def _eager_layers(model: Any, x: np.ndarray) -> list[Layer]:
    found = [(name, b) for name, b in _blocks(model) if b._reg_params]
    order: list[str] = []
    handles = []
    for name, block in found:

        def record(_block: Any, _inputs: Any, name: str = name) -> None:
            if name not in order:
                order.append(name)

        handles.append(block.register_forward_pre_hook(record))
    try:
        with _predicting():
            model(_input(x))
    finally:
        for h in handles:
            h.detach()
    by_name = dict(found)
    out = []
    for name in [*order, *(n for n, _ in found if n not in order)]:
        block = by_name[name]
        tensors, keys = _own(name, block)
        out.append(
            Layer(
                name or type(model).__name__,
                kind_of(tensors) or type(block).__name__,
                tensors,
                keys,
                name in order,
                type(block).__name__,
            )
        )
    return out


def _returned(out: Any) -> list[np.ndarray]:
    """The logits first, then any other array the model returns (aux logits)."""
    mx = _mx()
    items = list(out) if isinstance(out, (tuple, list)) else [out]
    arrays = [v.asnumpy().astype(np.float32) for v in items if isinstance(v, mx.nd.NDArray)]
    if not arrays:
        raise ValueError(f"MODEL: your model returned {type(out).__name__}; expected an NDArray of logits")
    return arrays


def _eager_run(model: Any, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    mx = _mx()
    events: list[Event] = []
    handles = []
    for name, block in _blocks(model):
        if not name:
            continue
        if name in calls:

            def called(_b: Any, _i: Any, name: str = name) -> None:
                events.append(Event(name))

            handles.append(block.register_forward_pre_hook(called))

        def finished(_b: Any, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, mx.nd.NDArray) and tuple(out.shape) in shapes:
                events.append(Event(name, out.asnumpy().astype(np.float32)))

        handles.append(block.register_forward_hook(finished))
    try:
        with _predicting():
            returned = _returned(model(_input(x)))
    finally:
        for h in handles:
            h.detach()
    return Run(returned, events)


# --------------------------------------------------------------------------------------
# Hybridized blocks and symbol pairs: the graph
# --------------------------------------------------------------------------------------


def _symbol(model: Any) -> tuple[Any, str]:
    """The model's graph (its outputs) and the name of its data input."""
    mx = _mx()
    if isinstance(model, mx.gluon.SymbolBlock):
        inputs, out = model._cached_graph
        return out, inputs[0].name
    return model(mx.sym.var("data", dtype="float32")), "data"


def _nodes(sym: Any) -> list[dict[str, Any]]:
    return list(json.loads(sym.tojson())["nodes"])


def _flag(attrs: Mapping[str, str], name: str, default: bool) -> bool:
    return str(attrs.get(name, default)).lower() in ("true", "1")


def _source(nodes: list[dict[str, Any]], index: int) -> str:
    """The name of what node ``index`` computes, through any chain of one-input
    operators that keep a tensor's values (a kernel flipped in place, a cast)."""
    node = nodes[index]
    while node["op"] in KEEPING and len(node.get("inputs", [])) == 1:
        node = nodes[node["inputs"][0][0]]
    return str(node["name"])


def _transforms_weight(nodes: list[dict[str, Any]], node: dict[str, Any], params: Mapping[str, str]) -> bool:
    """Whether ``node`` only rearranges a parameter (the suite's own export flips a
    kernel, the input and the output to pad as TensorFlow does): not a layer itself."""
    return node["op"] in KEEPING and _source(nodes, nodes.index(node)) in params


def _symbol_layers(model: Any) -> list[Layer]:
    """The graph's parametrised operators in the order it lists them (the order the
    forward pass made them), then any parametrised block the graph does not use."""
    sym, _ = _symbol(model)
    params = _params(model)
    by_name = {p.name: key for key, p in params.items()}  # the graph names a parameter by its full name
    nodes = _nodes(sym)
    out, seen = [], set()
    for node in nodes:
        if node["op"] == "null" or _transforms_weight(nodes, node, by_name):
            continue
        inputs = [_source(nodes, i[0]) for i in node.get("inputs", [])]
        held = [n for n in inputs if n in by_name]
        if not held:
            continue
        attrs = node.get("attrs", {})
        op = node["op"]
        if op == "Convolution":
            names = inputs[1:2] if _flag(attrs, "no_bias", False) else inputs[1:3]
            roles, kind = dict(zip(("weight", "bias"), names, strict=False)), CONV
        elif op == "FullyConnected":
            names = inputs[1:2] if _flag(attrs, "no_bias", False) else inputs[1:3]
            roles, kind = dict(zip(("weight", "bias"), names, strict=False)), DENSE
        elif op == "BatchNorm":
            roles, kind = dict(zip(SYMBOL_NORM, inputs[1:5], strict=True)), NORM
            if _flag(attrs, "fix_gamma", True):  # the operator's default: gamma is not used
                del roles["weight"]
        else:
            roles, kind = {n: n for n in held}, op
        seen.update(held)
        out.append(
            Layer(
                node["name"],
                kind,
                {r: _value(params[by_name[n]]) for r, n in roles.items()},
                {r: by_name[n] for r, n in roles.items()},
                True,
                op,
            )
        )
    for name, block in _blocks(model):
        if block._reg_params and not any(p.name in seen for p in block._reg_params.values()):
            tensors, keys = _own(name, block)
            out.append(
                Layer(name, kind_of(tensors) or type(block).__name__, tensors, keys, False, type(block).__name__)
            )
    return out


def _symbol_run(model: Any, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    """Every internal output of the graph, as outputs of a SymbolBlock that shares the
    model's parameters; the model's own outputs are those the graph returns."""
    mx = _mx()
    sym, data = _symbol(model)
    internals = sym.get_internals()
    nodes = _nodes(sym)
    names = [n for n in internals.list_outputs() if n.endswith("_output")]
    own = list(sym.list_outputs())
    wanted = list(dict.fromkeys([*own, *names]))
    group = mx.sym.Group([internals[n] for n in wanted])
    block = mx.gluon.SymbolBlock(group, mx.sym.var(data, dtype="float32"), params=model.collect_params())
    with _predicting():
        values = block(_input(x))
    by_name = {n: v.asnumpy().astype(np.float32) for n, v in zip(wanted, values, strict=True)}
    events: list[Event] = []
    for node in nodes:
        if node["op"] == "null":
            continue
        if node["name"] in calls:
            events.append(Event(node["name"]))
        value = by_name.get(f"{node['name']}_output")
        if value is not None and tuple(value.shape) in shapes:
            events.append(Event(node["name"], value))
    return Run([by_name[n] for n in own], events)


# --------------------------------------------------------------------------------------
# What verifying calls
# --------------------------------------------------------------------------------------


def layers(model: Any, x: np.ndarray) -> list[Layer]:
    if _hybridized(model):
        with _predicting():
            model(_input(x))  # a pass first: deferred shapes are known after it
        return _symbol_layers(model)
    return _eager_layers(model, x)


def run(model: Any, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    if _hybridized(model):
        return _symbol_run(model, x, shapes, calls)
    return _eager_run(model, x, shapes, calls)


# --------------------------------------------------------------------------------------
# A symbol pair, read as port reads one
# --------------------------------------------------------------------------------------


def read(symbol: Path) -> Any:
    """``NAME-symbol.json`` and the ``NAME-0000.params`` beside it as a SymbolBlock: the
    graph's size, structure and operators checked, the parameter file's declared arrays
    bounded, before MXNet reads either; ValueError naming the file otherwise."""
    params = deploy.params_of(symbol)
    size = symbol.stat().st_size
    if size > deploy.MAX_SYMBOL:
        raise ValueError(
            f"MODEL {symbol}: {size:,} bytes; a GoogLeNet's graph is ~150 KB (at most {deploy.MAX_SYMBOL:,})"
        )
    try:
        text = deploy.check_symbol(symbol)
    except PortError as e:
        raise ValueError(f"MODEL {e}") from None
    graph = json.loads(text)
    unknown = sorted({n["op"] for n in graph["nodes"]} - OPERATORS)
    if unknown:
        raise ValueError(
            f"MODEL {symbol}: its graph uses {', '.join(map(repr, unknown[:3]))}, an operator no GoogLeNet "
            f"(nor a mistake verify knows) has"
        )
    limit = taps_onnx.largest()
    try:
        declared = mxnet_reading.mxnet_params(params, limit.count)
        bounds.check_sizes(params, declared, limit)
    except ValueError as e:
        raise ValueError(f"MODEL {symbol}: {params.name}: {e}") from None
    for key, t in declared.items():
        if t.problem or bounds.dtype_name(t) not in bounds.FLOATS:
            raise ValueError(f"MODEL {symbol}: {params.name}: {key!r} is {t.problem or bounds.dtype_name(t)}")
    names = {k.split(":", 1)[-1] for k in declared}
    mx = _mx()
    try:
        sym = mx.sym.load_json(text)
        data = [n for n in sym.list_inputs() if n not in names]
    except Exception as e:  # noqa: BLE001 - MXNet's parser: its message, with the file
        raise ValueError(f"MODEL {symbol}: not an MXNet graph: {type(e).__name__}: {str(e)[:200]}") from None
    if len(data) != 1:
        raise ValueError(
            f"MODEL {symbol}: expected one input besides the parameters in {params.name}, "
            f"found {len(data)} ({', '.join(data[:4])})"
        )
    try:
        block = mx.gluon.SymbolBlock(sym, mx.sym.var(data[0], dtype="float32"))
        block.collect_params().load(str(params), ctx=mx.cpu(), cast_dtype=True, dtype_source="saved")
    except Exception as e:  # noqa: BLE001 - a parameter missing or of another shape: MXNet's words
        raise ValueError(
            f"MODEL {symbol}: {params.name} does not fit its graph: {str(e).splitlines()[0][:200]}"
        ) from None
    return block
