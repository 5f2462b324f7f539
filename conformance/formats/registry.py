"""Checkpoint formats, one registry entry each: how a file of that format is
recognised by its bytes, read to canonical parameters, written from them, and loaded
the way that framework's users load it (for verification).

| format          | files            | read / written with                                   |
|-----------------|------------------|-------------------------------------------------------|
| ``safetensors`` | ``.safetensors`` | canonical names (no framework)                        |
| ``npz``         | ``.npz``         | canonical names, ``allow_pickle=False``               |
| ``torch``       | ``.pt`` ``.pth`` | ``torch.load(weights_only=True)``; a state_dict, bare |
|                 |                  | or under ``state_dict`` / ``model``                   |
| ``keras-weights`` | ``.weights.h5`` | ``model.save_weights`` / ``load_weights``            |
| ``keras``       | ``.keras``       | ``model.save`` / ``keras.models.load_model``          |
| ``mxnet``       | ``.params``      | ``save_parameters``; reads Gluon and GluonCV names    |
| ``gluoncv``     | ``.params``      | GluonCV's names (``--to gluoncv``), for its ``googlenet`` |

A new format is one :class:`Format` entry in :data:`FORMATS`.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..canonical import Params, canonical_shapes, from_state_dict, save
from ..files import atomic_write
from ..frameworks import FRAMEWORKS, load
from ..spec import Plan
from . import naming

Native = tuple[Any, Any]  # (implementation package, model)


class PortError(ValueError):
    """A checkpoint or an option that cannot be ported; the message names the file,
    key or option and says what was expected."""


@dataclass
class Raw:
    """A file as read: its tensors under the file's own names, and what it says of itself."""

    tensors: dict[str, np.ndarray]
    scheme: str  # naming scheme of the keys (see conformance.formats.naming)
    notes: list[str]
    config: dict[str, Any] | None = None  # a .keras file's own record of its variant and options
    native: Native | None = None  # (backend, model) when reading loaded it natively


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    description: str
    framework: str | None  # the framework that reads and writes it natively; None: any
    sniffed: tuple[str, ...]  # what ``sniff`` reports for such a file
    read: Callable[[Path, Plan], Raw]
    # Write to the path (a temporary name; the caller renames it into place); returns the
    # (backend, model) that wrote it, for formats a framework writes.
    write: Callable[[Params, Plan, Path], Native | None]
    # Load the path as this format's users load it. ``reference``: the framework for
    # formats that have none; ``into``: a model of this framework to load into.
    load: Callable[[Path, Plan, str, Native | None], Native]


# --------------------------------------------------------------------------------------
# Recognising files
# --------------------------------------------------------------------------------------

_KIND_NAMES = {
    "safetensors": "safetensors",
    "npz": "a numpy archive",
    "torch": "a PyTorch file",
    "pickle": "a pickle (legacy PyTorch)",
    "hdf5": "HDF5 (Keras weights)",
    "keras": "a Keras model archive",
    "mxnet": "MXNet parameters",
    "zip": "a zip archive",
    "unknown": "not a known checkpoint format",
}
_MXNET_MAGIC = (0x112).to_bytes(8, "little")


def sniff(path: Path) -> str:
    """What the bytes of ``path`` are, whatever its name says."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            return "zip"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        return "zip"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(_MXNET_MAGIC):
        return "mxnet"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def check_content(path: Path, fmt: Format) -> None:
    """Refuse an empty file, or one whose bytes are another format than ``fmt``."""
    kind = sniff(path)
    if kind == "empty":
        raise PortError(f"{path}: the file is empty")
    if kind not in fmt.sniffed:
        hint = next(
            (f" (pass --from {f.name} if it is {f.description})" for f in FORMATS.values() if kind in f.sniffed), ""
        )
        raise PortError(f"{path}: expected {fmt.description} ({fmt.name}), but the file is {_KIND_NAMES[kind]}{hint}")


def backend(name: str):
    """An implementation package, or a PortError with its install hint."""
    found, skipped = load([name])
    if name not in found:
        raise PortError(f"{name} is needed for this format and is {skipped[name]}")
    return found[name]


def built(framework: str, p: Plan, params: Params | None = None) -> Native:
    """(backend, model) of ``framework`` for the plan's variant and options, holding
    ``params`` when given."""
    b = backend(framework)
    model = b.build(p.variant.name, **p.options.asdict())
    if params is not None:
        b.from_canonical(model, params)
    return b, model


def wipe(b, model, p: Plan) -> None:
    """Set every weight and statistic to NaN: whatever a load does not restore shows."""
    b.from_canonical(model, {k: np.full(s, np.nan, np.float32) for k, s in canonical_shapes(p).items()})


def _into(framework: str, p: Plan, into: Native | None) -> Native:
    """The model to load into, wiped to NaN first (saves building another)."""
    b, model = into if into is not None else built(framework, p)
    wipe(b, model, p)
    return b, model


# --------------------------------------------------------------------------------------
# Canonical files: safetensors and npz
# --------------------------------------------------------------------------------------


def _read_safetensors(path: Path, p: Plan) -> Raw:
    from safetensors.numpy import load_file

    tensors = dict(load_file(str(path)))
    return Raw(tensors, naming.detect(tensors), [])


def _write_safetensors(params: Params, p: Plan, path: Path) -> None:
    save(params, path, p, overwrite=True)


def _read_npz(path: Path, p: Plan) -> Raw:
    try:
        with np.load(path, allow_pickle=False) as archive:
            tensors = {k: archive[k] for k in archive.files}
    except ValueError as e:  # object arrays need pickle, which can run code
        raise PortError(f"{path}: refusing to read: {e}") from None
    return Raw(tensors, naming.detect(tensors), [])


def _write_npz(params: Params, p: Plan, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    atomic_write(path, buffer.getvalue(), overwrite=True)


def _load_by_name(fmt_name: str) -> Callable[[Path, Plan, str, Native | None], Native]:
    """Files of canonical tensors (or GluonCV's names): read them through the naming
    table into the format's framework (the reference one for canonical files)."""

    def load(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
        fmt = FORMATS[fmt_name]
        raw = fmt.read(path, p)
        tensors, _ = naming.to_canonical(raw.tensors, raw.scheme, p)
        return built(fmt.framework or reference, p, tensors)

    return load


# --------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------


def _read_torch(path: Path, p: Plan) -> Raw:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise PortError(
            f"{path}: refusing to load: the pickle needs more than tensors and plain containers, and "
            f"running its code is unsafe (torch.load weights_only=True: {first})"
        ) from None
    notes = []
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            notes.append(f"took the state_dict under the {wrapper!r} key")
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(
            f"{path}: expected a state_dict (a dict of tensors, possibly under 'state_dict' or 'model'), "
            f"got {type(obj).__name__}"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
        notes.append("removed the 'module.' prefix (DataParallel)")
    dropped = sum(k.endswith("num_batches_tracked") for k in obj)
    if dropped:
        notes.append(f"dropped {dropped} num_batches_tracked counters (not weights)")
    tensors = from_state_dict(obj)
    return Raw(tensors, naming.detect(tensors), notes)


def _write_torch(params: Params, p: Plan, path: Path) -> Native:
    import torch

    b, model = built("torch", p, params)
    torch.save(model.state_dict(), path)  # with num_batches_tracked: torchvision loads it strictly
    return b, model


def _load_torch(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    import torch

    b, model = _into("torch", p, into)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return b, model


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------


def _keras_shape(path: Path) -> tuple[bool, int | None]:
    """(has aux heads, number of classes) from a .weights.h5 file's layout. The functional
    model's file keys its graph's layers by class (``layers/inception_aux``, and
    ``layers/dense``: the one top-level Dense, fc); files of the earlier subclassed model
    by attribute (``aux1``, ``fc``)."""
    import h5py

    with h5py.File(path, "r") as f:
        aux = any(key in f for key in ("layers/inception_aux", "aux1", "layers/aux1"))
        fc = f.get("layers/dense/vars/0") or f.get("fc/vars/0") or f.get("layers/fc/vars/0")
        return aux, (int(fc.shape[-1]) if fc is not None else None)


def _read_keras_weights(path: Path, p: Plan) -> Raw:
    aux, classes = _keras_shape(path)
    k = backend("keras")
    model = k.build(
        p.variant.name, **{**p.options.asdict(), "num_classes": classes or p.num_classes, "aux_logits": aux}
    )
    try:
        model.load_weights(str(path))
    except Exception as e:  # noqa: BLE001 - Keras names the layer whose weights do not fit
        raise PortError(f"{path}: Keras could not load it into {p.variant.name}: {e}") from None
    return Raw(k.to_canonical(model), "canonical", [], native=(k, model))


def _write_keras_weights(params: Params, p: Plan, path: Path) -> Native:
    b, model = built("keras", p, params)
    model.save_weights(str(path))
    return b, model


def _load_keras_weights(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    b, model = _into("keras", p, into)
    model.load_weights(str(path))
    return b, model


def _read_keras(path: Path, p: Plan) -> Raw:
    k = backend("keras")
    import keras

    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    if config.get("registered_name") != "conformance>GoogLeNet":
        raise PortError(
            f"{path}: a Keras model of class {config.get('class_name')!r}, not this suite's GoogLeNet; "
            f"export its weights by name instead"
        )
    model = keras.models.load_model(path)  # safe_mode: no arbitrary code
    return Raw(k.to_canonical(model), "canonical", [], config=config["config"], native=(k, model))


def _write_keras(params: Params, p: Plan, path: Path) -> Native:
    b, model = built("keras", p, params)
    model.save(str(path))
    return b, model


def _load_keras(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    import keras

    return backend("keras"), keras.models.load_model(path)  # a .keras file builds its own model


# --------------------------------------------------------------------------------------
# MXNet Gluon and GluonCV
# --------------------------------------------------------------------------------------


def _read_mxnet(path: Path, p: Plan) -> Raw:
    backend("mxnet")
    import mxnet as mx

    loaded = mx.nd.load(str(path))
    if not isinstance(loaded, dict):
        raise PortError(f"{path}: holds an unnamed list of arrays, not named Gluon parameters")
    tensors = {k.split(":", 1)[-1]: v.asnumpy() for k, v in loaded.items()}  # "arg:" from Module API
    return Raw(tensors, naming.detect(tensors), [])


def _write_mxnet(params: Params, p: Plan, path: Path) -> Native:
    b, model = built("mxnet", p, params)
    model.save_parameters(str(path))
    return b, model


def _load_mxnet(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    b, model = _into("mxnet", p, into)
    model.load_parameters(str(path))  # strict: no missing, no extra parameter
    return b, model


def _write_gluoncv(params: Params, p: Plan, path: Path) -> None:
    backend("mxnet")
    import mxnet as mx

    renamed = naming.from_canonical(params, "gluoncv", p)
    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=np.float32) for k, v in renamed.items()})


# fmt: off
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("safetensors", (".safetensors",), "canonical safetensors", None, ("safetensors",),
           _read_safetensors, _write_safetensors, _load_by_name("safetensors")),
    Format("npz", (".npz",), "canonical numpy archive", None, ("npz",),
           _read_npz, _write_npz, _load_by_name("npz")),
    Format("torch", (".pth", ".pt"), "PyTorch state_dict", "torch", ("torch", "pickle"),
           _read_torch, _write_torch, _load_torch),
    Format("keras-weights", (".weights.h5",), "Keras weights", "keras", ("hdf5",),
           _read_keras_weights, _write_keras_weights, _load_keras_weights),
    Format("keras", (".keras",), "Keras model", "keras", ("keras",),
           _read_keras, _write_keras, _load_keras),
    Format("mxnet", (".params",), "MXNet Gluon parameters", "mxnet", ("mxnet",),
           _read_mxnet, _write_mxnet, _load_mxnet),
    # Only by name (--to gluoncv): .params files are read whatever their naming.
    Format("gluoncv", (".params",), "GluonCV parameters", "mxnet", ("mxnet",),
           _read_mxnet, _write_gluoncv, _load_by_name("gluoncv")),
)}
# fmt: on


def infer(path: Path, explicit: str | None, option: str) -> Format:
    """The format named by ``--from``/``--to``, else the one the file name says."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise PortError(f"{option}: unknown format {explicit!r}; expected one of {', '.join(FORMATS)}")
        return FORMATS[explicit]
    for f in FORMATS.values():
        if path.name.endswith(f.suffixes):
            return f
    suffixes = ", ".join(dict.fromkeys(s for f in FORMATS.values() for s in f.suffixes))
    raise PortError(f"{path}: cannot tell the format from the name (known: {suffixes}); pass {option}")


def read(path: Path, fmt: Format, p: Plan) -> Raw:
    """Read ``path``; corrupt or truncated files become a PortError naming the file."""
    check_content(path, fmt)
    try:
        return fmt.read(path, p)
    except PortError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or corrupt: the libraries' own errors, with the file named
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise PortError(f"{path}: cannot read it as {fmt.description}: {type(e).__name__}: {first}") from None


def installed_reference() -> str:
    """The first installed framework (torch, keras, mxnet order), for canonical files."""
    for name in FRAMEWORKS:
        if load([name])[0]:
            return name
    raise PortError("no framework is installed: install one of torch, keras, mxnet to verify a port")
