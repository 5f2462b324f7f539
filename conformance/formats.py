"""Checkpoint formats: recognise a file by its bytes, read it to canonical parameters,
write canonical parameters in it, and load it natively for verification.

| format          | files            | read / written with                           |
|-----------------|------------------|-----------------------------------------------|
| ``safetensors`` | ``.safetensors`` | canonical names (no framework)                |
| ``npz``         | ``.npz``         | canonical names, ``allow_pickle=False``       |
| ``torch``       | ``.pt`` ``.pth`` | ``torch.load(weights_only=True)``; a state_dict, |
|                 |                  | bare or under ``state_dict`` / ``model``      |
| ``keras-weights`` | ``.weights.h5`` | ``model.save_weights`` / ``load_weights``   |
| ``keras``       | ``.keras``       | ``model.save`` / ``keras.models.load_model``  |
| ``mxnet``       | ``.params``      | ``save_parameters``; reads Gluon and GluonCV names |
| ``gluoncv``     | ``.params``      | GluonCV's names (``--to gluoncv``), for its ``googlenet`` |
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import naming
from .canonical import Params, atomic_write, canonical_shapes, from_state_dict, save
from .frameworks import FRAMEWORKS, load
from .spec import Plan


class PortError(ValueError):
    """A checkpoint or an option that cannot be ported; the message names the file,
    key or option and says what was expected."""


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    description: str
    framework: str | None  # the framework that reads and writes it natively
    sniffed: tuple[str, ...]  # what ``sniff`` reports for such a file


FORMATS = {f.name: f for f in (
    Format("safetensors", (".safetensors",), "canonical safetensors", None, ("safetensors",)),
    Format("npz", (".npz",), "canonical numpy archive", None, ("npz",)),
    Format("torch", (".pth", ".pt"), "PyTorch state_dict", "torch", ("torch", "pickle")),
    Format("keras-weights", (".weights.h5",), "Keras weights", "keras", ("hdf5",)),
    Format("keras", (".keras",), "Keras model", "keras", ("keras",)),
    Format("mxnet", (".params",), "MXNet Gluon parameters", "mxnet", ("mxnet",)),
    # Only by name (--to gluoncv): .params files are read whatever their naming.
    Format("gluoncv", (".params",), "GluonCV parameters", "mxnet", ("mxnet",)),
)}

_KIND_NAMES = {"safetensors": "safetensors", "npz": "a numpy archive", "torch": "a PyTorch file",
               "pickle": "a pickle (legacy PyTorch)", "hdf5": "HDF5 (Keras weights)",
               "keras": "a Keras model archive", "mxnet": "MXNet parameters", "zip": "a zip archive",
               "unknown": "not a known checkpoint format"}
_MXNET_MAGIC = (0x112).to_bytes(8, "little")


def infer(path: Path, explicit: str | None, option: str) -> Format:
    """The format named by ``--from``/``--to``, else the one the file name says."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise PortError(f"{option}: unknown format {explicit!r}; expected one of {', '.join(FORMATS)}")
        return FORMATS[explicit]
    for f in FORMATS.values():
        if path.name.endswith(f.suffixes):
            return f
    suffixes = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise PortError(f"{path}: cannot tell the format from the name (known: {suffixes}); pass {option}")


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
        hint = next((f" (pass --from {f.name} if it is {f.description})" for f in FORMATS.values()
                     if kind in f.sniffed), "")
        raise PortError(f"{path}: expected {fmt.description} ({fmt.name}), but the file is "
                        f"{_KIND_NAMES[kind]}{hint}")


def backend(name: str):
    """An implementation package, or a PortError with its install hint."""
    found, skipped = load([name])
    if name not in found:
        raise PortError(f"{name} is needed for this format and is {skipped[name]}")
    return found[name]


# --------------------------------------------------------------------------------------
# Reading: file -> (raw tensors in the file's naming, what the file says of its shape)
# --------------------------------------------------------------------------------------


@dataclass
class Raw:
    tensors: dict[str, np.ndarray]
    scheme: str  # naming scheme of the keys (see conformance.naming)
    notes: list[str]
    config: dict[str, Any] | None = None  # a .keras file's own record of its variant and options
    native: tuple[Any, Any] | None = None  # (backend, model) when reading loaded it natively


def _read_safetensors(path: Path) -> Raw:
    from safetensors.numpy import load_file

    tensors = dict(load_file(str(path)))
    return Raw(tensors, naming.detect(tensors), [])


def _read_npz(path: Path) -> Raw:
    try:
        with np.load(path, allow_pickle=False) as archive:
            tensors = {k: archive[k] for k in archive.files}
    except ValueError as e:  # object arrays need pickle, which can run code
        raise PortError(f"{path}: refusing to read: {e}") from None
    return Raw(tensors, naming.detect(tensors), [])


def _read_torch(path: Path) -> Raw:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise PortError(f"{path}: refusing to load: the pickle needs more than tensors and plain "
                        f"containers, and running its code is unsafe (torch.load weights_only=True: "
                        f"{first})") from None
    notes = []
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            notes.append(f"took the state_dict under the {wrapper!r} key")
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(f"{path}: expected a state_dict (a dict of tensors, possibly under "
                        f"'state_dict' or 'model'), got {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("removed the 'module.' prefix (DataParallel)")
    dropped = sum(k.endswith("num_batches_tracked") for k in obj)
    if dropped:
        notes.append(f"dropped {dropped} num_batches_tracked counters (not weights)")
    tensors = from_state_dict(obj)
    return Raw(tensors, naming.detect(tensors), notes)


def _keras_shape(path: Path) -> tuple[bool, int | None]:
    """(has aux heads, number of classes) from a .weights.h5 file's layout."""
    import h5py

    with h5py.File(path, "r") as f:
        aux = "aux1" in f or "layers/aux1" in f
        fc = f.get("fc/vars/0") or f.get("layers/fc/vars/0")
        return aux, (int(fc.shape[-1]) if fc is not None else None)


def _read_keras_weights(path: Path, p: Plan) -> Raw:
    aux, classes = _keras_shape(path)
    k = backend("keras")
    model = k.build(p.variant.name, classes or p.num_classes, aux, transform_input=p.variant.transform_input)
    try:
        model.load_weights(str(path))
    except Exception as e:  # Keras names the layer whose weights do not fit
        raise PortError(f"{path}: Keras could not load it into {p.variant.name}: {e}") from None
    return Raw(k.to_canonical(model), "canonical", [], native=(k, model))


def _read_keras(path: Path) -> Raw:
    k = backend("keras")
    import keras

    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    if config.get("registered_name") != "conformance>GoogLeNet":
        raise PortError(f"{path}: a Keras model of class {config.get('class_name')!r}, not this suite's "
                        f"GoogLeNet; export its weights by name instead")
    model = keras.models.load_model(path)  # safe_mode: no arbitrary code
    return Raw(k.to_canonical(model), "canonical", [], config=config["config"], native=(k, model))


def _read_mxnet(path: Path) -> Raw:
    backend("mxnet")
    import mxnet as mx

    loaded = mx.nd.load(str(path))
    if not isinstance(loaded, dict):
        raise PortError(f"{path}: holds an unnamed list of arrays, not named Gluon parameters")
    tensors = {k.split(":", 1)[-1]: v.asnumpy() for k, v in loaded.items()}  # "arg:" from Module API
    return Raw(tensors, naming.detect(tensors), [])


def read(path: Path, fmt: Format, p: Plan) -> Raw:
    """Read ``path``; corrupt or truncated files become a PortError naming the file."""
    check_content(path, fmt)
    readers: dict[str, Callable[[], Raw]] = {
        "safetensors": lambda: _read_safetensors(path), "npz": lambda: _read_npz(path),
        "torch": lambda: _read_torch(path), "keras-weights": lambda: _read_keras_weights(path, p),
        "keras": lambda: _read_keras(path), "mxnet": lambda: _read_mxnet(path),
        "gluoncv": lambda: _read_mxnet(path),
    }
    try:
        return readers[fmt.name]()
    except PortError:
        raise
    except Exception as e:  # truncated or corrupt: the libraries' own errors, with the file named
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise PortError(f"{path}: cannot read it as {fmt.description}: {type(e).__name__}: {first}") from None


# --------------------------------------------------------------------------------------
# Writing canonical parameters, and loading a written file the framework's own way
# --------------------------------------------------------------------------------------


def built(framework: str, p: Plan, params: Params | None = None):
    """(backend, model) of ``framework`` for the plan's variant and options, holding
    ``params`` when given."""
    b = backend(framework)
    v = p.variant
    model = b.build(v.name, v.num_classes, v.aux_logits, **({"transform_input": True} if v.transform_input else {}))
    if params is not None:
        b.from_canonical(model, params)
    return b, model


def write(params: Params, p: Plan, fmt: Format, path: Path) -> tuple[Any, Any] | None:
    """Write ``params`` to ``path`` (a temporary name; the caller renames it into place).
    Returns the (backend, model) that wrote it, for formats a framework writes."""
    if fmt.name == "safetensors":
        save(params, path, p, overwrite=True)
        return None
    if fmt.name == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        atomic_write(path, buffer.getvalue(), overwrite=True)
        return None
    if fmt.name == "gluoncv":
        backend("mxnet")
        import mxnet as mx

        mx.nd.save(str(path), {k: mx.nd.array(v, dtype=np.float32)
                               for k, v in naming.from_canonical(params, "gluoncv", p).items()})
        return None
    b, model = built(fmt.framework, p, params)
    if fmt.name == "torch":
        import torch

        torch.save(model.state_dict(), path)  # with num_batches_tracked: torchvision loads it strictly
    elif fmt.name == "keras-weights":
        model.save_weights(str(path))
    elif fmt.name == "keras":
        model.save(str(path))
    else:
        model.save_parameters(str(path))
    return b, model


def wipe(b, model, p: Plan) -> None:
    """Set every weight and statistic to NaN: whatever a load does not restore shows."""
    b.from_canonical(model, {k: np.full(s, np.nan, np.float32) for k, s in canonical_shapes(p).items()})


def load_native(path: Path, fmt: Format, p: Plan, reference: str, into: tuple[Any, Any] | None = None):
    """(backend, model) with ``path`` loaded the way a user of that framework loads it.
    ``into``: a model of that framework to load into, after wiping it to NaN (saves
    building another). Canonical and GluonCV files go through ``from_canonical``."""
    if fmt.name in ("safetensors", "npz", "gluoncv"):  # through the naming tables
        raw = read(path, fmt, p)
        tensors, _ = naming.to_canonical(raw.tensors, raw.scheme, p)
        return built(framework_of(fmt, reference), p, tensors)
    if fmt.name == "keras":
        import keras

        return backend("keras"), keras.models.load_model(path)  # a .keras file builds its own model
    b, model = into if into is not None else built(fmt.framework, p)
    wipe(b, model, p)
    if fmt.name == "torch":
        import torch

        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    elif fmt.name == "keras-weights":
        model.load_weights(str(path))
    else:
        model.load_parameters(str(path))  # strict: no missing, no extra parameter
    return b, model


def framework_of(fmt: Format, default: str) -> str:
    return fmt.framework or default


def installed_reference() -> str:
    """The first installed framework (torch, keras, mxnet order), for canonical files."""
    for name in FRAMEWORKS:
        if load([name])[0]:
            return name
    raise PortError("no framework is installed: install one of torch, keras, mxnet to verify a port")
