"""A ``.keras`` file anyone can load (``--to keras-builtin``): a functional
``keras.Model`` of Keras's built-in layers only, as keras-hub builds its backbones, so
``keras.saving.load_model`` opens it on any Keras 3 backend without this suite.

The model is fixed at the variant's own input size (NHWC), because PyTorch's pooling
and TensorFlow's SAME padding become explicit ``ZeroPadding2D`` layers whose widths
depend on the size:

* a conv pads ``(padding, padding)``, or TensorFlow's SAME pads (``spec.same_pads``:
  (2, 3) for 7x7/2 on 224), then runs ``padding="valid"``;
* a max pool pads ``padding`` before and, in ceil mode, what the last window needs
  after. Zeros are exact there because every padded max pool of every variant reads a
  ReLU's output (checked, see :func:`_nonnegative`): each window holds at least one real
  cell, every real cell is >= 0, so a padded 0 never exceeds the window's true maximum
  (PyTorch and TensorFlow pad with -inf for the same result);
* an average pool counts the padded zeros (``count_include_pad``, PyTorch's default) by
  padding with zeros and dividing by the whole window; a window that would reach past
  the padded input (PyTorch divides it by fewer cells) or that must not count padding
  has no built-in layer and is refused;
* adaptive average pooling is ``GlobalAveragePooling2D`` to 1 x 1, an exact
  ``AveragePooling2D`` where the map divides into the output, and refused otherwise
  (torchvision's aux pool, 14 -> 4, has overlapping windows);
* LRN has no built-in layer: refused.

Layer names are the canonical prefixes with ``_`` for ``.`` (the torch backend refuses
a ``.`` in a variable's path), so the written weights map back to canonical keys and are
compared bit for bit after the fresh process loads them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..canonical import Params, bn_suffixes, conv_key
from ..spec import (
    LRN,
    AdaptiveAvgPool,
    ConvUnit,
    Dense,
    InceptionUnit,
    Plan,
    Pool,
    ReLU,
    ResidualUnit,
    aux_admits,
    conv_out,
    op_chw,
    pool_out,
    same_pads,
    stage_shapes,
)
from . import deploy
from .base import FileContents, Format, PortError, Written, backend

Pads = tuple[int, int]


def dotless(name: str) -> str:
    """A canonical prefix as a Keras layer name: ``inception3a.branch2.1.conv`` ->
    ``inception3a_branch2_1_conv``."""
    return name.replace(".", "_")


def pool_pads(pool: Pool, size: int) -> Pads:
    """(before, after) zeros along one axis that make a ``padding="valid"`` Keras pool
    give PyTorch's (or TensorFlow's SAME) windows at this map size: ``padding`` before,
    and after it what the last window reaches (more than ``padding`` in ceil mode, less
    when floor rounding leaves cells unread)."""
    if pool.same:
        return same_pads(size, pool.kernel, pool.stride)
    out = pool_out(size, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)
    reach = (out - 1) * pool.stride + pool.kernel
    return pool.padding, max(reach - size - pool.padding, 0)


def conv_pads(unit: ConvUnit, size: int) -> Pads:
    return same_pads(size, unit.kernel, unit.stride) if unit.same else (unit.padding, unit.padding)


def _pool_problem(pool: Pool | AdaptiveAvgPool, size: int, nonnegative: bool) -> str:
    """Why no built-in layer computes this pool at this map size ("" if one does)."""
    if isinstance(pool, AdaptiveAvgPool):
        if pool.size == 1 or size % pool.size == 0:
            return ""
        return (
            f"{pool.name} averages adaptively {size} x {size} -> {pool.size} x {pool.size} (overlapping windows), "
            f"which needs torch's AdaptiveAvgPool2d: Keras has no such layer (without aux heads it can be "
            f"written: init --no-aux-logits)"
        )
    before, after = pool_pads(pool, size)
    if pool.kind == "max":
        if (before or after) and not nonnegative:
            return (
                f"{pool.name} pads a max pool whose input can be negative: zeros could win, and Keras has no "
                f"layer that pads with -inf"
            )
        return ""
    if (before or after) and not pool.count_include_pad:
        return f"{pool.name} averages without counting its padding, which no Keras pooling layer does here"
    if after > pool.padding:
        return (
            f"{pool.name}'s last window (ceil mode) reaches past its padded input and is divided by fewer "
            f"cells, which no Keras pooling layer does"
        )
    return ""


def _nonnegative(op: Any, before: bool) -> bool:
    """Whether an op's output is >= 0 everywhere, given whether its input is: a ReLU
    makes it so, a pool keeps it, anything else (a conv without ReLU, the input) not."""
    if isinstance(op, ConvUnit):
        return op.relu
    if isinstance(op, (Pool, AdaptiveAvgPool)):
        return before
    return isinstance(op, (ReLU, ResidualUnit))


def refusal(plan: Plan) -> str:
    """Why ``plan`` cannot be written with built-in layers at its own input size, in one
    line naming the variant and the layer Keras lacks ("" if it can be)."""
    name, size = plan.variant.name, plan.input_size
    lrn = [s.name for s in plan.stages if isinstance(s, LRN)]
    if lrn:
        return (
            f"--to keras-builtin: {name} needs LocalResponseNorm ({', '.join(lrn)}), which Keras has no built-in "
            f"layer for; write --to keras (the suite's own layers) or --to savedmodel"
        )
    if plan.aux and not aux_admits(plan, size):
        return f"--to keras-builtin: {name}'s aux heads do not run at its input size {size}"
    shapes = stage_shapes(plan, size)
    problems: list[str] = []
    hw, nonneg = size, False
    for stage in plan.stages:
        if isinstance(stage, (Pool, AdaptiveAvgPool)):
            problems.append(_pool_problem(stage, hw, nonneg))
        elif isinstance(stage, InceptionUnit):
            ends = []
            for branch in stage.branches:
                flows = nonneg
                for op in branch:
                    if isinstance(op, (Pool, AdaptiveAvgPool)):
                        problems.append(_pool_problem(op, hw, flows))
                    flows = _nonnegative(op, flows)
                ends.append(flows)
            nonneg = all(ends)
        if not isinstance(stage, InceptionUnit):
            nonneg = _nonnegative(stage, nonneg)
        hw = shapes[stage.name][1]
        for head in plan.aux_for(stage.name):
            problems.append(_pool_problem(head.pool, hw, nonneg))
    if plan.head_pool is not None:
        problems.append(_pool_problem(plan.head_pool, hw, nonneg))
    found = next((p for p in problems if p), "")
    return f"--to keras-builtin: {name}: {found}" if found else ""


def check(plan: Plan) -> None:
    """:func:`refusal` as the PortError a command turns into one line and exit 2."""
    said = refusal(plan)
    if said:
        raise PortError(said)


# --------------------------------------------------------------------------------------
# The functional model
# --------------------------------------------------------------------------------------


class _Builder:
    """Keras layers for a plan's units, each applied to a tensor at a known map size;
    ``assign`` collects (layer, weights in Keras's order) to set once the model is built."""

    def __init__(self, keras: Any, params: Params, weights: Any) -> None:
        self.layers, self.params, self.weights = keras.layers, params, weights
        self.assign: list[tuple[str, list[np.ndarray]]] = []

    def pad(self, x: Any, pads: Pads, name: str) -> Any:
        if pads == (0, 0):
            return x
        return self.layers.ZeroPadding2D((pads, pads), name=f"{name}_pad")(x)

    def conv(self, x: Any, unit: ConvUnit, size: int) -> tuple[Any, int]:
        key = conv_key(unit)
        pads = conv_pads(unit, size)
        symmetric = unit.stride == 1 and unit.kernel % 2 == 1 and pads == (unit.kernel // 2,) * 2
        if not symmetric:  # a stride-1 odd kernel padded k // 2 each side is Keras's "same"
            x = self.pad(x, pads, dotless(key))
        x = self.layers.Conv2D(
            unit.out_channels,
            unit.kernel,
            strides=unit.stride,
            padding="same" if symmetric else "valid",
            use_bias=unit.bias,
            name=dotless(key),
        )(x)
        kernel = [self.weights.oihw_to_hwio(self.params[f"{key}.weight"])]
        self.assign.append((dotless(key), kernel + ([self.params[f"{key}.bias"]] if unit.bias else [])))
        if unit.norm is not None:
            bn = f"{unit.name}.bn"
            x = self.layers.BatchNormalization(
                epsilon=unit.norm.eps, momentum=1 - unit.norm.momentum, scale=unit.norm.scale, name=dotless(bn)
            )(x)
            self.assign.append((dotless(bn), [self.params[f"{bn}.{s}"] for s in bn_suffixes(unit)]))
        if unit.relu:
            x = self.layers.ReLU(name=f"{dotless(unit.name)}_relu")(x)
        return x, conv_out(size, unit.kernel, unit.stride, unit.padding, unit.same)

    def pool(self, x: Any, pool: Pool | AdaptiveAvgPool, size: int, flat: bool = False) -> tuple[Any, int]:
        name = dotless(pool.name)
        if isinstance(pool, AdaptiveAvgPool):
            if pool.size == 1 and flat:  # the head's: straight to the vector fc reads
                return self.layers.GlobalAveragePooling2D(name=name)(x), 1
            window = size // pool.size
            return self.layers.AveragePooling2D(window, window, name=name)(x), pool.size
        x = self.pad(x, pool_pads(pool, size), name)
        kind = self.layers.MaxPooling2D if pool.kind == "max" else self.layers.AveragePooling2D
        return kind(pool.kernel, pool.stride, padding="valid", name=name)(x), op_chw(pool, (0, size, size))[1]

    def dense(self, x: Any, dense: Dense, relu: bool = False) -> Any:
        name = dotless(dense.name)
        x = self.layers.Dense(dense.out_features, name=name)(x)
        kernel = self.weights.dense_to_keras(dense)(self.params[f"{dense.name}.weight"])
        self.assign.append((name, [kernel, self.params[f"{dense.name}.bias"]]))
        return self.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def dropout(self, x: Any, rate: float, name: str) -> Any:
        return self.layers.Dropout(rate, name=name)(x) if rate else x

    def stage(self, x: Any, stage: Any, size: int) -> tuple[Any, int]:
        if isinstance(stage, ConvUnit):
            return self.conv(x, stage, size)
        if isinstance(stage, (Pool, AdaptiveAvgPool)):
            return self.pool(x, stage, size)
        if isinstance(stage, ReLU):
            return self.layers.ReLU(name=dotless(stage.name))(x), size
        if isinstance(stage, ResidualUnit):
            y, _ = self.conv(x, stage.conv1, size)
            y, _ = self.conv(y, stage.conv2, size)
            added = self.layers.Add(name=f"{dotless(stage.name)}_add")([x, y])
            return self.layers.ReLU(name=f"{dotless(stage.name)}_relu")(added), size
        assert isinstance(stage, InceptionUnit)
        outs = []
        for branch in stage.branches:
            y, hw = x, size
            for op in branch:
                y, hw = self.conv(y, op, hw) if isinstance(op, ConvUnit) else self.pool(y, op, hw)
            outs.append(y)
        return self.layers.Concatenate(axis=-1, name=f"{dotless(stage.name)}_concat")(outs), size

    def transform(self, x: Any, plan: Plan) -> Any:
        """transform_input as a frozen 1x1 conv: output channel c is input channel
        order[c] times scale[c] plus shift[c] (every other product is an exact zero)."""
        t = plan.transform
        assert t is not None
        kernel = np.zeros((1, 1, plan.in_channels, len(t.order)), np.float32)
        for c, (source, scale) in enumerate(zip(t.order, t.scale, strict=True)):
            kernel[0, 0, source, c] = scale
        x = self.layers.Conv2D(len(t.order), 1, trainable=False, name="transform_input")(x)
        self.assign.append(("transform_input", [kernel, np.asarray(t.shift, np.float32)]))
        return x


def build(plan: Plan, params: Params) -> Any:
    """The functional model of ``plan`` at its own input size, holding ``params``:
    NHWC in; the logits out, or ``{"logits", "aux2", "aux1"}`` with aux heads."""
    check(plan)
    backend("keras")
    import keras

    from impl_keras import weights

    b = _Builder(keras, params, weights)
    size = plan.input_size
    image = keras.Input((size, size, plan.in_channels), name="image")
    x = b.transform(image, plan) if plan.transform is not None else image
    aux: dict[str, Any] = {}
    for stage in plan.stages:
        x, size = b.stage(x, stage, size)
        for head in plan.aux_for(stage.name):
            y, _ = b.pool(x, head.pool, size)
            y, _ = b.conv(y, head.conv, head.pooled)
            y = keras.layers.Flatten(name=f"{head.name}_flatten")(y)
            y = b.dense(y, head.fc1, relu=True)
            y = b.dropout(y, head.dropout, f"{head.name}_dropout")
            aux[head.name] = b.dense(y, head.fc2)
    if plan.head_pool is not None:
        x, size = b.pool(x, plan.head_pool, size, flat=True)
    if len(x.shape) == 4:
        x = keras.layers.Flatten(name="flatten")(x)
    x = b.dropout(x, plan.dropout, "dropout")
    logits = b.dense(x, plan.fc)
    outputs = {"logits": logits, **{head.name: aux[head.name] for head in reversed(plan.aux)}} if aux else logits
    model = keras.Model(image, outputs, name=plan.variant.name)
    for name, values in b.assign:
        model.get_layer(name).set_weights([np.asarray(v, np.float32) for v in values])
    return model


def write(params: Params, plan: Plan) -> Written:
    model = build(plan, params)
    with tempfile.TemporaryDirectory(prefix="conformance-keras-builtin-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes(), None


# --------------------------------------------------------------------------------------
# Loaded in a fresh process (fresh.py's ``keras-builtin``), its weights back to canonical
# --------------------------------------------------------------------------------------


def canonical_paths(plan: Plan) -> dict[str, tuple[str, Any]]:
    """Keras variable path (``layer/variable``) -> (canonical key, Keras -> canonical)."""
    backend("keras")
    from impl_keras import weights

    out: dict[str, tuple[str, Any]] = {}
    for unit in plan.units():
        if isinstance(unit, Dense):
            out[f"{dotless(unit.name)}/kernel"] = (f"{unit.name}.weight", weights.dense_from_keras(unit))
            out[f"{dotless(unit.name)}/bias"] = (f"{unit.name}.bias", weights.same)
            continue
        key = conv_key(unit)
        out[f"{dotless(key)}/kernel"] = (f"{key}.weight", weights.hwio_to_oihw)
        if unit.bias:
            out[f"{dotless(key)}/bias"] = (f"{key}.bias", weights.same)
        for suffix in bn_suffixes(unit) if unit.norm is not None else ():
            variable = weights.BN_VARIABLES[suffix]
            out[f"{dotless(unit.name)}_bn/{variable}"] = (f"{unit.name}.bn.{suffix}", weights.same)
    return out


def _canonical(model: deploy.Loaded) -> Params:
    """The loaded file's weights under canonical keys; a variable the plan does not know
    keeps its Keras path (the comparison then reports it), the frozen transform aside."""
    table = canonical_paths(model.plan)
    out: Params = {}
    for path, value in model.weights.items():
        if path.startswith("transform_input/"):
            continue
        key, convert = table.get(path, (path, lambda v: v))
        out[key] = np.ascontiguousarray(convert(value))
    return out


RUNTIME = deploy.Runtime("keras.saving.load_model", True, _canonical)


def load(path: Path, plan: Plan, reference: str, into: Any) -> Any:
    return RUNTIME, deploy.Loaded(Path(path), plan, "keras-builtin")


def read(path: Path, plan: Plan) -> FileContents:
    raise PortError(f"{path}: keras-builtin files are written here, not read; port the weights it was written from")


# fmt: off
ENTRIES: tuple[Format, ...] = (
    # Only by name (--to keras-builtin): .keras is the suite's own Keras model unless told.
    Format("keras-builtin", (), "Keras functional model of built-in layers", "keras", (),
           read, write, load, names=(".keras",), readable=False, checksum="zip CRC-32",
           loading="import keras; model = keras.saving.load_model({path})  "
                   "# any backend; x NHWC at the size it was written for",
           limits="input: NHWC, fixed at the variant's own size (its pooling and SAME padding are explicit "
                  "ZeroPadding2D layers for that size)",
           keeps_transform="the graph", refuses=refusal),
)
# fmt: on
