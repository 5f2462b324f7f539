"""Keras's files: ``.weights.h5`` (``model.save_weights`` / ``load_weights``) and
``.keras`` (``model.save`` / ``keras.models.load_model``). Their HDF5 weights are walked
bounded (:func:`h5_datasets`) and mapped to canonical keys by the layout Keras itself
writes for the plan, found by saving a model (no guess about Keras's names)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import reading
from ..canonical import Params, canonical_shapes
from ..reading import Damaged, Tensor
from ..spec import MAX_CLASSES, Plan, with_options
from . import bounds
from .base import LOADING_BUILT, BackendModel, FileContents, Format, PortError, Written, backend, built, wiped_model
from .canonical_files import recorded_transform

MAX_CONFIG = 1 << 20  # a .keras config.json of this suite is ~1 KB
MAX_HDF5_OBJECTS = 100_000  # groups and datasets in a .weights.h5 (GoogLeNet's: ~1,500)
MAX_HDF5_PATH = 4096  # characters of an object's path (Keras's are under 200)


class _Named(io.BytesIO):
    """A buffer Keras's ``save_weights`` / ``save`` write into: they check the name's
    ending with ``str()``, then hand a ``BytesIO`` to h5py / zipfile as they would a path
    (Keras's H5IOStore takes either)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __str__(self) -> str:
        return self.name


def _keras_bytes(model, suffix: str) -> bytes:
    buffer = _Named(f"memory{suffix}")
    if suffix == ".keras":
        model.save(buffer)
    else:
        model.save_weights(buffer)
    return buffer.getvalue()


_LAYOUTS: dict[Plan, dict[str, tuple[str, tuple[int, ...]]]] = {}


def _keras_layout(plan: Plan, model: Callable[[], BackendModel]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HDF5 dataset path -> (canonical key, Keras shape) in what ``save_weights`` writes
    for ``p``: found by saving a model (``model()``, a Keras model of ``p``) whose every
    tensor holds its own index, so no guess about Keras's layout is made here."""
    import h5py

    if plan not in _LAYOUTS:
        k, m = model()
        shapes = canonical_shapes(plan)
        keys = list(shapes)
        k.from_canonical(m, {key: np.full(shapes[key], i + 1, np.float32) for i, key in enumerate(keys)})
        with h5py.File(io.BytesIO(_keras_bytes(m, ".weights.h5")), "r") as f:
            _LAYOUTS[plan] = {name: (keys[int(ds[(0,) * ds.ndim]) - 1], tuple(ds.shape)) for name, ds in h5_datasets(f)}
    return _LAYOUTS[plan]


def _once(make: Callable[[], BackendModel]) -> Callable[[], BackendModel]:
    """``make``, called at most once."""
    made: list[BackendModel] = []

    def get() -> BackendModel:
        if not made:
            made.append(make())
        return made[0]

    return get


def h5_datasets(h5file) -> Iterator[tuple[str, Any]]:
    """Every dataset of an HDF5 file, refusing links that leave it (external and soft
    links, external or virtual storage), more objects than any weights file holds, and
    an object reached twice: hard links may make the tree a graph, even a cycle (a group
    linked back to the root), which a walk by name would follow without end. Each
    object is entered once, by its address in the file, and paths are bounded, so the
    walk costs what the file's own objects cost."""
    import h5py

    seen = 0
    entered = {h5py.h5o.get_info(h5file.id).addr}
    stack = [("", h5file)]
    while stack:
        prefix, group = stack.pop()
        for name in group:
            seen += 1
            if seen > MAX_HDF5_OBJECTS:
                raise Damaged(f"holds more than {MAX_HDF5_OBJECTS:,} groups and datasets")
            path = f"{prefix}{name}"
            if len(path) > MAX_HDF5_PATH:
                raise Damaged(f"an object's path is {len(path):,} characters long; a Keras weight's is under 200")
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise Damaged(f"{path[:200]!r} is a {type(link).__name__} (it points outside the weights)")
            obj = group[name]
            address = h5py.h5o.get_info(obj.id).addr
            if address in entered:
                raise Damaged(
                    f"{path[:200]!r} is a second link to an object already linked elsewhere (a group linked back to "
                    f"itself or to the root makes a cycle); a weights file links each object once"
                )
            entered.add(address)
            if isinstance(obj, h5py.Group):
                stack.append((f"{path}/", obj))
            elif isinstance(obj, h5py.Dataset):
                if obj.external or obj.is_virtual:
                    raise Damaged(f"{path[:200]!r} keeps its data outside the file")
                yield path, obj


def _keras_to_canonical_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Keras shape in canonical order: conv (kh, kw, in, out) -> (out, in, kh, kw);
    dense (in, out) -> (out, in). For messages about a tensor that does not fit."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape)) if len(shape) == 2 else shape


def _h5_tensors(
    source: Callable[[], Any], plan: Plan, src: Path, limit: bounds.Budget, model: Callable[[], BackendModel]
) -> dict[str, Tensor]:
    """The datasets of a Keras weights file (``source()`` opens it with h5py) as
    canonical tensors: a dataset where ``p``'s layout has one gets its canonical key,
    any other keeps its HDF5 path (and is then reported as unexpected). Sizes are
    checked against ``limit`` first, before Keras is even imported (``model()`` builds
    a Keras model of ``p`` when the layout is needed)."""
    with source() as f:
        found = {path: (tuple(int(d) for d in ds.shape), ds.dtype) for path, ds in h5_datasets(f)}
    bounds.check_sizes(
        src, {path: Tensor(shape, dtype, reading.never_loaded) for path, (shape, dtype) in found.items()}, limit
    )
    from impl_keras.weights import table

    layout, rows, expected = _keras_layout(plan, model), table(plan), canonical_shapes(plan)
    cache: dict[str, np.ndarray] = {}

    def loader(path: str, key: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if not cache:  # one pass reads every accepted dataset
                with source() as f:
                    cache.update({name: np.asarray(ds[()]) for name, ds in h5_datasets(f) if name in layout})
            return np.ascontiguousarray(rows[key].to_canonical(cache[path]))

        return load

    tensors: dict[str, Tensor] = {}
    for path, (shape, dtype) in found.items():
        if path in layout:
            key, keras_shape = layout[path]
            canonical = expected[key] if shape == keras_shape else _keras_to_canonical_shape(shape)
            tensors[key] = Tensor(canonical, dtype, loader(path, key), where=f"HDF5 {path} {shape}")
        else:
            tensors[path] = Tensor(shape, dtype, reading.never_loaded)
    return tensors


def _read_keras_weights(path: Path, plan: Plan) -> FileContents:
    import h5py

    plan = bounds.full(plan)
    model = _once(lambda: built("keras", plan))  # one Keras model: the layout, then the native load
    tensors = _h5_tensors(lambda: h5py.File(path, "r"), plan, path, bounds.ceiling(plan), model)
    with h5py.File(path, "r") as f:
        digest = f.attrs.get(DIGEST_ATTRIBUTE)
        recorded = None
        if TRANSFORM_ATTRIBUTE in f.attrs and f.attrs.get_id(TRANSFORM_ATTRIBUTE).shape == ():  # one value, no more
            recorded = recorded_transform(bool(f.attrs[TRANSFORM_ATTRIBUTE]))
    loadable = path.name.endswith(".weights.h5")  # Keras's load_weights refuses other names
    native = (lambda q: _load_keras_weights(path, q, "", model() if q == plan else None)) if loadable else None
    return FileContents(
        tensors,
        "canonical",
        [],
        load_natively=native,
        digest=digest if isinstance(digest, str) else None,
        transform_input=recorded,
    )


DIGEST_ATTRIBUTE = "conformance_sha256"  # the suite's own .weights.h5: a digest of its tensors
TRANSFORM_ATTRIBUTE = "conformance_transform_input"  # and the plan's transform_input, which Keras ignores


def _write_keras_weights(params: Params, plan: Plan) -> Written:
    """What ``save_weights`` writes, plus a root attribute with the SHA-256 of the
    canonical tensors (``reading.tensor_digest``): HDF5 keeps no checksum of its data, so
    without it a flipped byte would be read as a weight. Keras ignores the attribute."""
    import h5py

    b, model = built("keras", plan, params)
    buffer = io.BytesIO(_keras_bytes(model, ".weights.h5"))
    with h5py.File(buffer, "r+") as f:
        f.attrs[DIGEST_ATTRIBUTE] = reading.tensor_digest(params)
        f.attrs[TRANSFORM_ATTRIBUTE] = np.bool_(plan.options.transform_input)
    return buffer.getvalue(), (b, model)


def _load_keras_weights(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    b, model = wiped_model("keras", plan, into)
    model.load_weights(str(path))
    return b, model


def _read_keras(path: Path, plan: Plan) -> FileContents:
    import h5py

    limit = bounds.budget(plan)
    config_limit = (MAX_CONFIG, f"a GoogLeNet's is about 1 KB (at most {MAX_CONFIG:,} bytes accepted)")
    reading.zip_members(path, limit.total, limit.total, {"config.json": config_limit})
    reading.check_crcs(path)
    try:
        config = json.loads(reading.read_member(path, "config.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PortError(f"{path}: its config.json is not JSON ({e})") from None
    if not isinstance(config, dict) or config.get("registered_name") != "conformance>GoogLeNet":
        what = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise PortError(
            f"{path}: a Keras model of class {what!r}, not this suite's GoogLeNet; export its weights by name instead"
        )
    options: dict[str, Any] = config["config"] if isinstance(config.get("config"), dict) else {}
    _check_keras_config(path, options, plan)
    q = with_options(
        plan, aux_logits=bool(options.get("aux_logits")), transform_input=bool(options.get("transform_input"))
    )
    inner = reading.read_member(path, "model.weights.h5")
    tensors = _h5_tensors(lambda: h5py.File(io.BytesIO(inner), "r"), q, path, limit, lambda: built("keras", q))
    loadable = path.name.endswith(".keras")  # load_model takes other names for other formats
    return FileContents(
        tensors,
        "canonical",
        [],
        config=options,
        load_natively=(lambda r: _load_keras(path, r, "", None)) if loadable else None,
        transform_input=q.options.transform_input,
        variant=q.variant.name,
    )


def _check_keras_config(path: Path, options: dict[str, Any], plan: Plan) -> None:
    """The model the config builds, before Keras builds it: this variant, a class count
    within bounds and the one asked for."""
    variant, classes = options.get("variant"), options.get("num_classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 1 <= classes <= MAX_CLASSES:
        raise PortError(f"{path}: its config declares {classes!r} classes; expected 1 to {MAX_CLASSES:,}")
    if (variant, classes) != (plan.variant.name, plan.num_classes):
        raise PortError(
            f"{path}: this Keras model is {variant} with {classes} classes; "
            f"pass --variant {variant} --num-classes {classes}"
        )


def _write_keras(params: Params, plan: Plan) -> Written:
    b, model = built("keras", plan, params)
    return _keras_bytes(model, ".keras"), (b, model)


def _load_keras(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    import keras

    return backend("keras"), keras.models.load_model(path)  # a .keras file builds its own model


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("keras-weights", (".weights.h5",), "Keras weights", "keras", ("hdf5",),
           _read_keras_weights, _write_keras_weights, _load_keras_weights, names=(".weights.h5",),
           checksum="digest", loading=LOADING_BUILT + "model.load_weights({path})",
           keeps_transform="an attribute Keras ignores"),
    Format("keras", (".keras",), "Keras model", "keras", ("keras",),
           _read_keras, _write_keras, _load_keras, names=(".keras",), checksum="zip CRC-32",
           loading="import impl_keras, keras; model = keras.saving.load_model({path})  "
                   "# impl_keras first: it registers the classes the file names and imports TensorFlow quietly",
           keeps_transform="its config"),
)
# fmt: on
