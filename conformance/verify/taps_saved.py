"""A SavedModel directory (``tf.saved_model.save``, Keras's ``model.export``) seen as
:mod:`.taps` sees a torch module, through its serving signature.

TensorFlow loads the directory; the signature's concrete function is frozen
(``convert_variables_to_constants_v2``: every call inlined, each variable a constant
named after the placeholder that captured it), so the whole forward pass is one graph
of TensorFlow operations. That graph gives what hooks give for a torch module:

* the order the model uses its variables: the graph walked depth first from its input
  (each branch's operations one after another, as a Python forward pass runs them),
  each variable placed where the first operation reading it stands;
* every intermediate tensor: the graph is run with each operation's 4-D output fetched
  too, so every stage the graph computes is compared.

Variables are grouped into layers by their names (``conv2d_3/kernel``, TF-slim's
``.../weights``, BatchNorm's ``gamma``, ``beta``, ``moving_mean``,
``moving_variance``) and read in canonical layouts (HWIO kernels to OIHW, dense
(in, out) to (out, in)). The input layout and channels are the signature's input's.

The directory is read as ``port`` reads files before TensorFlow opens it: regular files
and directories only (no symlink, device or FIFO), a bounded number of them, their
total size bounded by what the largest GoogLeNet holds plus its graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import files
from .pairing import Layer, kind_of
from .taps import Event, Run
from .taps_onnx import largest_file

FRAMEWORK = "savedmodel"
SIGNATURE = "serving_default"
MAX_GRAPH = 64 << 20  # saved_model.pb and fingerprint: a GoogLeNet's graph, traced twice, is a few MB
MAX_ENTRIES = 256  # files and directories: a SavedModel holds a handful, its variables sharded into a few
MAX_DEPTH = 4  # variables/, assets/, assets.extra/ and what a user put under them
ROLES = {
    "kernel": "weight",
    "weights": "weight",
    "bias": "bias",
    "biases": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
SKIPPED = ("Identity", "Const", "Placeholder", "NoOp", "Reshape", "Squeeze")  # no stage is one of these


@dataclass
class SavedModel:
    """A loaded SavedModel to verify; its variables change only through :func:`load`."""

    path: Path
    loaded: Any = field(repr=False)
    function: Any = field(repr=False)  # the serving signature's concrete function
    input_name: str  # the frozen graph's input placeholder
    channels_last: bool
    channels: int
    size: int | None  # the one square size the signature declares, None where any runs
    variables: dict[str, Any] = field(repr=False)  # key (its name, ``#k`` for a name seen before) -> tf.Variable
    groups: dict[str, dict[str, str]] = field(repr=False)  # layer -> role -> variable key
    frozen: Any = field(default=None, repr=False)  # (graph_def, outputs, constant -> variable), made on first use


def is_model(model: object) -> bool:
    return isinstance(model, SavedModel)


def version() -> str:
    import tensorflow as tf

    return f"tensorflow {tf.__version__} (SavedModel)"


# --------------------------------------------------------------------------------------
# Reading the directory
# --------------------------------------------------------------------------------------


def check_directory(path: Path) -> None:
    """Regular files and directories only, bounded in number, depth and bytes, and a
    ``saved_model.pb``; ValueError naming what is wrong."""
    what = f"MODEL {path}"
    if not (path / "saved_model.pb").is_file() or (path / "saved_model.pb").is_symlink():
        raise ValueError(f"{what}: a directory without a saved_model.pb (tf.saved_model.save writes one)")
    problem = files.directory_problem(path, MAX_ENTRIES, MAX_DEPTH, largest_file() + MAX_GRAPH, "a SavedModel")
    if problem:
        raise ValueError(f"{what}: {problem}")


def read(path: Path) -> SavedModel:
    """The directory, checked, loaded by TensorFlow; ValueError naming it otherwise."""
    check_directory(path)
    from ..frameworks import quiet_stderr

    with quiet_stderr():
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as e:  # noqa: BLE001 - TensorFlow's errors on a damaged directory: said with it
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(
                f"MODEL {path}: TensorFlow cannot load it as a SavedModel: {type(e).__name__}: {first}"
            ) from None
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE not in signatures:
        raise ValueError(f"MODEL {path}: no {SIGNATURE!r} signature (it has {sorted(signatures) or 'none'})")
    function = signatures[SIGNATURE]
    specs = [s for s in tf.nest.flatten(function.structured_input_signature) if hasattr(s, "shape")]
    if len(specs) != 1 or specs[0].shape.rank != 4:
        shapes = ", ".join(str(s.shape) for s in specs)
        raise ValueError(f"MODEL {path}: its {SIGNATURE} signature takes {shapes or 'nothing'}; expected one 4-D image")
    dims = list(specs[0].shape)
    frozen = _freeze(function)
    channels_last = _channels_last(dims, frozen[0])
    channels = dims[3] if channels_last else dims[1]
    height, width = (dims[1], dims[2]) if channels_last else (dims[2], dims[3])
    variables = _keyed(function.graph.variables)
    return SavedModel(
        path,
        loaded,
        function,
        frozen[3],
        channels_last,
        int(channels) if channels is not None else _kernel_channels(variables),
        int(height) if height is not None and height == width else None,
        variables,
        _groups(variables),
        frozen,
    )


def _keyed(variables: Any) -> dict[str, Any]:
    """Variables by name; a name met again (the layers a subclassed Keras block makes in its
    ``__init__`` share its path) gets ``#1``, ``#2``..."""
    out: dict[str, Any] = {}
    for v in variables:
        name = v.name.removesuffix(":0")
        key, k = name, 0
        while key in out:
            k += 1
            key = f"{name}#{k}"
        out[key] = v
    return out


def _groups(variables: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The variables as layers, in their saved order: consecutive variables of one name's
    path form a layer until a role comes again (a kernel after a kernel and its bias)."""
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last = None
    for key in variables:
        prefix, role = _layer_of(_name(key)), _role(_name(key))
        if current is None or prefix != last or role in current:
            layer, k = prefix, 0
            while layer in groups:
                k += 1
                layer = f"{prefix}#{k}"
            current = groups[layer] = {}
        current[role] = key
        last = prefix
    return groups


def _name(key: str) -> str:
    return key.split("#")[0]


def _channels_last(dims: list[int | None], graph_def: Any) -> bool:
    """NHWC where the last dimension is the channels' (1 or 3 while the second is not),
    NCHW the other way round; else the first convolution's data_format."""
    if dims[3] in (1, 3) and dims[1] not in (1, 3):
        return True
    if dims[1] in (1, 3) and dims[3] not in (1, 3):
        return False
    conv = next((n for n in graph_def.node if n.op == "Conv2D"), None)
    return conv is None or conv.attr["data_format"].s.decode() != "NCHW"


def _kernel_channels(variables: Mapping[str, Any]) -> int:
    kernel = next((v for v in variables.values() if len(v.shape) == 4), None)
    return int(kernel.shape[2]) if kernel is not None else 3


def channels(model: SavedModel) -> int:
    return model.channels


def input_size(model: SavedModel) -> int | None:
    return model.size


# --------------------------------------------------------------------------------------
# Variables
# --------------------------------------------------------------------------------------


def _role(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return ROLES.get(last, last)


def _layer_of(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else name


def _to_canonical(role: str, value: np.ndarray) -> np.ndarray:
    if role == "weight" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    if role == "weight" and value.ndim == 2:
        return value.T  # (in, out) -> (out, in)
    return value


def _to_saved(role: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if role == "weight" and len(shape) == 4:
        return value.reshape(shape[3], shape[2], shape[0], shape[1]).transpose(2, 3, 1, 0)
    if role == "weight" and len(shape) == 2:
        return value.reshape(shape[1], shape[0]).T
    return value.reshape(shape)


def state(model: SavedModel) -> dict[str, np.ndarray]:
    """The variables by their own names, in canonical layouts."""
    return {
        name: _to_canonical(_role(_name(name)), np.asarray(v.numpy(), np.float32))
        for name, v in model.variables.items()
        if v.dtype.is_floating
    }


def load(model: SavedModel, keys: Mapping[str, str], params: Mapping[str, np.ndarray]) -> None:
    """Write canonical ``params`` into the variables (``keys``: canonical -> theirs)."""
    for canonical, theirs in keys.items():
        variable = model.variables[theirs]
        shape = tuple(int(d) for d in variable.shape)
        value = _to_saved(_role(_name(theirs)), np.asarray(params[canonical], np.float32), shape)
        variable.assign(value.astype(variable.dtype.as_numpy_dtype))
    model.frozen = None


# --------------------------------------------------------------------------------------
# The frozen graph
# --------------------------------------------------------------------------------------


def _freeze(function: Any) -> tuple[Any, list[str], dict[str, str], str]:
    """The signature's graph with every call inlined and every variable a constant: the
    graph, its output tensors' names, each constant's variable, and its input's name."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(function)
    handles = {id(v.handle): key for key, v in _keyed(function.graph.variables).items()}
    constants = {inner.op.name: handles[id(outer)] for outer, inner in function.graph.captures if id(outer) in handles}
    image = next(t for t in frozen.inputs if t.dtype != tf.resource)
    return frozen.graph.as_graph_def(), [t.name for t in frozen.outputs], constants, image.op.name


def _frozen(model: SavedModel) -> tuple[Any, list[str], dict[str, str], str]:
    if model.frozen is None:
        model.frozen = _freeze(model.function)
    return model.frozen


def _source(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def _order(graph_def: Any) -> list[Any]:
    """The graph's nodes depth first from their inputs: each branch's operations one
    after another; a node comes once every node it reads came."""
    nodes = list(graph_def.node)
    by_name = {n.name: n for n in nodes}
    parents = {n.name: [_source(i) for i in n.input if _source(i) in by_name] for n in nodes}
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for parent in parents[n.name]:
            children[parent].append(n.name)
    order: list[Any] = []
    done: set[str] = set()
    stack = [n.name for n in reversed(nodes) if not parents[n.name]]
    while stack:
        name = stack.pop()
        if name in done or any(p not in done for p in parents[name]):
            continue
        done.add(name)
        order.append(by_name[name])
        stack += reversed(children[name])
    return order + [n for n in nodes if n.name not in done]


def _readers(graph_def: Any, constants: Mapping[str, str], layer_of: Mapping[str, str]) -> dict[str, str]:
    """Each operation that reads a variable (through Identity nodes) -> the variable's layer."""
    through = {n.name: _source(n.input[0]) for n in graph_def.node if n.op == "Identity" and n.input}

    def origin(name: str) -> str:
        seen = 0
        while name in through and seen < len(through):
            name, seen = through[name], seen + 1
        return name

    out: dict[str, str] = {}
    for n in graph_def.node:
        if n.op == "Identity":
            continue
        for i in n.input:
            variable = constants.get(origin(_source(i)))
            if variable is not None:
                out.setdefault(n.name, layer_of[variable])
    return out


def _layer_index(model: SavedModel) -> dict[str, str]:
    return {key: layer for layer, roles in model.groups.items() for key in roles.values()}


def layers(model: SavedModel, x: np.ndarray) -> list[Layer]:
    """The variables grouped into layers, in the order the graph first reads each."""
    graph_def, _, constants, _ = _frozen(model)
    readers = _readers(graph_def, constants, _layer_index(model))
    order: list[str] = []
    for node in _order(graph_def):
        layer = readers.get(node.name)
        if layer is not None and layer not in order:
            order.append(layer)
    grouped = model.groups
    values = state(model)
    out = []
    for layer in [*(n for n in order if n in grouped), *(n for n in grouped if n not in order)]:
        tensors = {role: values[name] for role, name in grouped[layer].items() if name in values}
        out.append(
            Layer(layer, kind_of(tensors) or "variables", tensors, grouped[layer], layer in order, "tf.Variable")
        )
    return out


def run(model: SavedModel, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    """The signature's outputs, and every operation's 4-D output whose NCHW shape is in
    ``shapes`` (in the graph's depth-first order), with the first read of each layer in
    ``calls`` as its call."""
    import tensorflow as tf

    graph_def, outputs, constants, _ = _frozen(model)
    readers = _readers(graph_def, constants, _layer_index(model))
    image = x.transpose(0, 2, 3, 1) if model.channels_last else x
    graph = tf.Graph()
    with graph.as_default():
        fed = tf.compat.v1.placeholder(tf.float32, image.shape, name="verify_input")
        tf.graph_util.import_graph_def(graph_def, input_map={model.input_name: fed}, name="")
    taps: list[tuple[str, str | None]] = []  # (tensor, stage's op) or (layer, None) for a call
    called: set[str] = set()
    for node in _order(graph_def):
        layer = readers.get(node.name)
        if layer is not None and layer in calls and layer not in called:
            called.add(layer)
            taps.append((layer, None))
        if node.op in SKIPPED or node.name == model.input_name:
            continue
        tensor = graph.get_operation_by_name(node.name).outputs[:1]
        if not tensor or tensor[0].shape.rank != 4 or not tensor[0].dtype.is_floating:
            continue
        dims = tuple(tensor[0].shape.as_list())
        nchw = (dims[0], dims[3], dims[1], dims[2]) if model.channels_last else dims
        if nchw in shapes:
            taps.append((tensor[0].name, node.name))
    fetches = outputs + [name for name, op in taps if op is not None]
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(fetches, {fed: np.ascontiguousarray(image, np.float32)})
    got = dict(zip(fetches, values, strict=True))
    events = []
    for name, op in taps:
        if op is None:
            events.append(Event(name))
            continue
        value = np.asarray(got[name], np.float32)
        events.append(Event(op, np.ascontiguousarray(value.transpose(0, 3, 1, 2) if model.channels_last else value)))
    return Run([np.asarray(got[o], np.float32) for o in outputs], events)
