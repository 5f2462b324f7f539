"""A user's ``keras.Model`` (functional, Sequential or subclassed) seen as :mod:`.taps`
sees a torch module: its ``call`` methods wrapped for one forward pass, as forward
hooks are. Every layer's ``call`` (nested ones too) is replaced on the instance for the
pass and restored after it, so the same code reads a functional graph, a Sequential
and a subclassed model whose ``call`` is Python: the order in which the weighted layers
run, and every layer's output in the order they finish.

Keras keeps conv kernels (kh, kw, in, out), dense kernels (in, out) and BatchNorm's
gamma, beta, moving_mean, moving_variance; a model is NHWC unless its convs say
``channels_first``. The adapter converts at its edge: the suite's NCHW inputs go in
the model's layout, its 4-D outputs come back NCHW, and its tensors are read and
written in canonical layouts (OIHW, dense (out, in)), so pairing and the comparison
see what they see of a torch model.

A ``.keras`` file is read by :mod:`.keras_file`. Keras is imported only when a Keras
model is met.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .pairing import Layer, kind_of
from .taps import Event, Run

FRAMEWORK = "keras"
ROLES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}

# Dense layers that read an NHWC map flattened in (H, W, C) order, with that map's
# (H, W, C): seen in a forward pass (:func:`layers`), used wherever their kernel is read
# or written, so the canonical rows are in PyTorch's (C, H, W) order.
FLATTENED: weakref.WeakKeyDictionary[Any, tuple[int, int, int]] = weakref.WeakKeyDictionary()


def is_model(model: object) -> bool:
    keras = sys.modules.get("keras")  # a Keras model exists only once Keras was imported
    return keras is not None and isinstance(model, keras.Model)


def version() -> str:
    import keras

    return f"keras {keras.__version__} ({keras.backend.backend()})"


# --------------------------------------------------------------------------------------
# The model's layers and tensors
# --------------------------------------------------------------------------------------


def _children(layer: Any) -> list[Any]:
    return [c for c in layer._flatten_layers(include_self=False, recursive=False) if c is not layer]


def _walk(model: Any) -> dict[str, Any]:
    """Every layer under ``model`` by a path of names (``sequential/inception/conv2d_3``),
    in declaration order; a layer reached twice (shared) is listed once."""
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(layer: Any, prefix: str) -> None:
        for child in _children(layer):
            if id(child) in seen or type(child).__name__ == "InputLayer":
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            if path in found:  # two children of one parent given the same name
                path = f"{path}#{sum(p.startswith(path) for p in found)}"
            found[path] = child
            visit(child, f"{path}/")

    visit(model, "")
    return found


def _own(layer: Any) -> dict[str, Any]:
    """A leaf layer's variables by role (weight, bias, running_mean, running_var); a
    variable of another name keeps it."""
    if _children(layer):
        return {}
    return {ROLES.get(v.name, v.name): v for v in layer.weights}


def _channels_last(model: Any) -> bool:
    """The input layout: the first conv's data_format (Keras's default where none says)."""
    for layer in _walk(model).values():
        data_format = getattr(layer, "data_format", None)
        if data_format is not None and getattr(layer, "kernel_size", None) is not None:
            return data_format == "channels_last"
    import keras

    return keras.config.image_data_format() == "channels_last"


def _hwc_order(hwc: tuple[int, int, int]) -> np.ndarray:
    """Input j of an (H, W, C) flatten is input ``order[j]`` of the (C, H, W) one."""
    height, width, channels = hwc
    return np.arange(height * width * channels).reshape(channels, height, width).transpose(1, 2, 0).reshape(-1)


def _to_canonical(role: str, value: np.ndarray, hwc: tuple[int, int, int] | None = None) -> np.ndarray:
    if role == "weight" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    if role == "weight" and value.ndim == 2:
        if hwc is None:
            return value.T  # (in, out) -> (out, in)
        out = np.empty_like(value.T)
        out[:, _hwc_order(hwc)] = value.T
        return out
    return value


def _to_keras(
    role: str, value: np.ndarray, shape: tuple[int, ...], hwc: tuple[int, int, int] | None = None
) -> np.ndarray:
    if role == "weight" and len(shape) == 4:
        return value.reshape(shape[3], shape[2], shape[0], shape[1]).transpose(2, 3, 1, 0)
    if role == "weight" and len(shape) == 2:
        rows = value.reshape(shape[1], shape[0])
        return (rows if hwc is None else rows[:, _hwc_order(hwc)]).T
    return value.reshape(shape)


def _numpy(value: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value), np.float32)


def _unbuilt(model: Any) -> ValueError:
    return ValueError(
        f"MODEL: your Keras model ({type(model).__name__}) is not built, so its input is unknown: give it a "
        f"keras.Input, or call model.build((None, height, width, channels)) before returning it"
    )


def _convolves_channels_last_only() -> bool:
    """Whether Keras runs on TensorFlow's own CPU kernels, which convolve channels_last
    maps only: channels_first runs on a GPU or on oneDNN's kernels, which TensorFlow
    turns on by itself on some CPUs only (TF_ENABLE_ONEDNN_OPTS decides elsewhere)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    return not tf.config.list_physical_devices("GPU") and not _pywrap_util_port.IsMklEnabled()


def channels(model: Any) -> int:
    """The input channels: the first conv's kernel's (three where the model has none)."""
    if not model.built:
        raise _unbuilt(model)
    if not _channels_last(model) and _convolves_channels_last_only():
        raise ValueError(
            "MODEL: your Keras model is channels_first, and TensorFlow convolves channels_first maps on this CPU "
            "only with oneDNN, which is off here: run with TF_ENABLE_ONEDNN_OPTS=1 (set before TensorFlow starts)"
        )
    for layer in _walk(model).values():
        kernel = _own(layer).get("weight")
        if kernel is not None and len(kernel.shape) == 4:
            return int(kernel.shape[2])
    return 3


def input_size(model: Any) -> int | None:
    """The one square input size a functional graph declares (its ``keras.Input``
    refuses any other), None where the model runs at any size."""
    if getattr(model, "_operations", None) is None or len(getattr(model, "inputs", None) or ()) != 1:
        return None
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        return None
    height, width = shape[1:3] if _channels_last(model) else shape[2:4]
    return int(height) if height is not None and height == width else None


def state(model: Any) -> dict[str, np.ndarray]:
    """The model's tensors by layer path and variable name, in canonical layouts."""
    out = {}
    for path, layer in _walk(model).items():
        for role, variable in _own(layer).items():
            out[f"{path}/{variable.name}"] = _to_canonical(role, _numpy(variable), FLATTENED.get(layer))
    return out


def load(model: Any, keys: Mapping[str, str], params: Mapping[str, np.ndarray]) -> None:
    """Write canonical ``params`` into the model's variables (``keys``: canonical ->
    theirs), each in its Keras layout."""
    variables = {
        f"{path}/{v.name}": (role, v, layer) for path, layer in _walk(model).items() for role, v in _own(layer).items()
    }
    for canonical, theirs in keys.items():
        role, variable, layer = variables[theirs]
        shape = tuple(int(d) for d in variable.shape)
        value = _to_keras(role, np.asarray(params[canonical], np.float32), shape, FLATTENED.get(layer))
        variable.assign(value.astype(variable.dtype))


# --------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _wrapped(layers: Mapping[str, Any], before: Any, after: Any) -> Iterator[None]:
    """Each layer's ``call`` replaced on the instance by one that reports ``before(name,
    args)`` and ``after(name, output)``; the instance's own ``call`` (where it had one)
    back after."""
    own = {name: layer.__dict__.get("call") for name, layer in layers.items()}
    for name, layer in layers.items():
        original = layer.call

        def call(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            before(_name, args)
            out = _original(*args, **kwargs)
            after(_name, out)
            return out

        layer.call = call
    try:
        yield
    finally:
        for name, layer in layers.items():
            if own[name] is None:
                del layer.call
            else:
                layer.call = own[name]


def _forward(model: Any, x: np.ndarray) -> Any:
    """The model on NCHW ``x``, in its own layout, in inference mode (BatchNorm's moving
    statistics, no dropout)."""
    if not model.built:
        raise _unbuilt(model)
    if _channels_last(model):
        x = x.transpose(0, 2, 3, 1)
    return model(np.ascontiguousarray(x, np.float32), training=False)


def layers(model: Any, x: np.ndarray) -> list[Layer]:
    """Every weighted layer, with whether one forward pass on ``x`` used it, in the order
    of first use (then the unused ones, in declaration order)."""
    every = _walk(model)
    found = {path: layer for path, layer in every.items() if _own(layer)}
    order: list[str] = []
    flattened: list[tuple[int, int, int] | None] = [None]  # the last NHWC map a Flatten read
    channels_last = _channels_last(model)

    def before(name: str, args: tuple) -> None:
        layer = every[name]
        shape = tuple(getattr(args[0], "shape", ())) if args else ()
        if type(layer).__name__ == "Flatten":
            flattened[0] = (int(shape[1]), int(shape[2]), int(shape[3])) if len(shape) == 4 else None
        if name in found and name not in order:
            order.append(name)
            kernel = _own(layer).get("weight")
            hwc = flattened[0]
            if kernel is not None and len(kernel.shape) == 2 and hwc is not None and channels_last:
                if hwc[0] * hwc[1] > 1 and int(np.prod(hwc)) == int(kernel.shape[0]):
                    FLATTENED[layer] = hwc
                flattened[0] = None

    with _wrapped(every, before, lambda *_: None):
        _forward(model, x)
    order = _in_data_flow(model, order)
    out = []
    for path in [*order, *(p for p in found if p not in order)]:
        variables = _own(found[path])
        hwc = FLATTENED.get(found[path])
        tensors = {role: _to_canonical(role, _numpy(v), hwc) for role, v in variables.items()}
        out.append(
            Layer(
                path,
                kind_of(tensors) or type(found[path]).__name__,
                tensors,
                {role: f"{path}/{v.name}" for role, v in variables.items()},
                path in order,
                type(found[path]).__name__,
            )
        )
    return out


def _graph_order(operations: list[Any]) -> list[Any]:
    """A functional graph's operations depth first: each branch's layers one after
    another, as a Python forward pass runs them (Keras runs the graph by depth, every
    branch's first layer before any branch's second, which leaves two branches with
    layers of the same shapes indistinguishable by order). An operation comes once
    every operation it reads from came."""
    inside = {id(op) for op in operations}
    parents = {
        id(op): [p.operation for node in op._inbound_nodes for p in node.parent_nodes if id(p.operation) in inside]
        for op in operations
    }
    children: dict[int, list[Any]] = {id(op): [] for op in operations}
    for op in operations:
        for parent in parents[id(op)]:
            children[id(parent)].append(op)
    order: list[Any] = []
    done: set[int] = set()
    stack = [op for op in reversed(operations) if not parents[id(op)]]
    while stack:
        op = stack.pop()
        if id(op) in done or any(id(p) not in done for p in parents[id(op)]):
            continue
        done.add(id(op))
        order.append(op)
        stack += reversed(children[id(op)])
    return order + [op for op in operations if id(op) not in done]


def _in_data_flow(model: Any, used: list[str]) -> list[str]:
    """The layers in the order a forward pass ran them, but inside each functional
    (sub)model in its graph's depth-first order (:func:`_graph_order`)."""
    paths = _walk(model)
    first: dict[str, int] = {}
    for i, leaf in enumerate(used):
        parts = leaf.split("/")
        for k in range(1, len(parts) + 1):
            first.setdefault("/".join(parts[:k]), i)
    ranks: dict[str, dict[int, int]] = {}

    def rank(parent: str, child: str) -> int:
        container = model if not parent else paths[parent]
        if parent not in ranks:
            operations = getattr(container, "_operations", None)
            ranks[parent] = (
                {id(op): i for i, op in enumerate(_graph_order(list(operations)))} if operations is not None else {}
            )
        if ranks[parent]:
            return ranks[parent].get(id(paths[child]), len(paths))
        return first.get(child, len(used))

    def key(leaf: str) -> tuple[int, ...]:
        parts = leaf.split("/")
        return tuple(rank("/".join(parts[:k]), "/".join(parts[: k + 1])) for k in range(len(parts)))

    return sorted(used, key=key)


def _returned(out: object) -> list[np.ndarray]:
    """The logits first, then any other tensor the model returns (aux logits)."""
    if isinstance(out, Mapping):
        items = [out["logits"], *(v for k, v in out.items() if k != "logits")] if "logits" in out else out.values()
        return [_numpy(v) for v in items]
    if isinstance(out, (tuple, list)):
        return [_numpy(v) for v in out]
    if hasattr(out, "shape"):
        return [_numpy(out)]
    raise ValueError(f"MODEL: your model returned {type(out).__name__}; expected a tensor of logits (or a tuple)")


def run(model: Any, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    """One forward pass: what the model returns, and (in the order they happen) the call
    of each layer named in ``calls`` and every layer output whose NCHW shape is in
    ``shapes``."""
    events: list[Event] = []
    channels_last = _channels_last(model)

    def before(name: str, _args: tuple) -> None:
        if name in calls:
            events.append(Event(name))

    def after(name: str, out: Any) -> None:
        if not hasattr(out, "shape") or len(out.shape) != 4:
            return
        value = _numpy(out)
        value = value.transpose(0, 3, 1, 2) if channels_last else value
        if tuple(value.shape) in shapes:
            events.append(Event(name, np.ascontiguousarray(value)))

    with _wrapped(_walk(model), before, after):
        returned = _returned(_forward(model, x))
    return Run(returned, events)
