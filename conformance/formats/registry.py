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
| ``caffe``       | ``.caffemodel``  | read only: Caffe's ``NetParameter`` (both layer formats), |
|                 |                  | with protobuf and ``caffe.proto``; bvlc_googlenet's names |
| ``tf-checkpoint`` | ``PREFIX``       | read only: ``PREFIX.index`` + ``PREFIX.data-*`` with   |
|                 |                  | ``tf.train.load_checkpoint`` (never the ``.meta`` graph); |
|                 |                  | TF-slim's ``inception_v1`` names (``googlenet_slim``)  |
| ``onnx``, ``torchscript``, ``exported``, ``savedmodel``, ``gluon-export``: deployment  |
| graphs (``conformance.formats.deploy``), verified in a fresh process by their runtimes    |

A new format is one :class:`Format` entry in :data:`FORMATS`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import reading
from ..canonical import Params, canonical_shapes, to_bytes
from ..frameworks import FRAMEWORKS, load, quiet_stderr
from ..reading import Damaged, Tensor
from ..spec import LRN, MAX_CLASSES, Plan, with_options
from . import bounds, caffe, deploy, naming, pickles, tfcheckpoint
from .base import Format, Native, PortError, Raw, Written, backend, built, meaningful, one_line, wipe
from .gluon import read_params as _read_mxnet

MAX_PICKLE = 16 << 20  # a state_dict's data.pkl is ~30 KB
MAX_CONFIG = 1 << 20  # a .keras config.json of this suite is ~1 KB
MAX_HDF5_OBJECTS = 100_000  # groups and datasets in a .weights.h5 (GoogLeNet's: ~1,500)
MAX_HDF5_PATH = 4096  # characters of an object's path (Keras's are under 200)


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
    "damaged-zip": "a damaged zip archive (truncated or corrupt: its directory cannot be read)",
    "caffe": "a Caffe model (a NetParameter protobuf)",
    "onnx": "an ONNX model",
    "torchscript": "a TorchScript module (torch.jit.save)",
    "exported": "a PyTorch ExportedProgram (torch.export.save)",
    "mxnet-symbol": "an MXNet graph (-symbol.json)",
    "caffe-text": "a Caffe text prototxt (the network's description; its weights are in the .caffemodel)",
    "tf-checkpoint": "a TensorFlow checkpoint (PREFIX.index + PREFIX.data-*)",
    "damaged-tf": "a damaged TensorFlow checkpoint (its .index has no table magic at its end: truncated or corrupt)",
    "unknown": "not a known checkpoint format",
}
_MXNET_MAGIC = (0x112).to_bytes(8, "little")


def sniff(path: Path) -> str:
    """What the bytes of ``path`` are, whatever its name says. A TensorFlow checkpoint
    is a prefix: its ``.index`` file says."""
    tf_prefix = tfcheckpoint.prefix(path)
    if tf_prefix is not None:
        return "tf-checkpoint" if tfcheckpoint.looks_like_index(tfcheckpoint.index(tf_prefix)) else "damaged-tf"
    with open(path, "rb") as f:
        head = f.read(256)  # a Caffe network's name and first layer tag; 16 bytes tell the others
    size = path.stat().st_size
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        if reading.zip_problem(path) is not None:
            return "damaged-zip"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any("/code/__torch__/" in n for n in names):  # before data.pkl: it has one too
            return "torchscript"
        if any(n.endswith("models/model.json") for n in names) and any("/data/weights/" in n for n in names):
            return "exported"
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
    if _looks_like_onnx(head):
        return "onnx"
    if head.lstrip()[:1] == b"{" and b'"nodes"' in head:
        return "mxnet-symbol"
    if caffe.looks_like(head, size):
        return "caffe"
    if caffe.cut_short(head, size):
        return "damaged-caffe"
    if caffe.looks_like_text(head):
        return "caffe-text"
    return "unknown"


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto as exporters write it: field 1 (``ir_version``, a small
    varint) first, then a producer, domain, version, doc, graph or opset field."""
    return (
        len(head) > 3
        and head[0] == 0x08
        and 3 <= head[1] <= 30
        and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)
    )


# The zip-based formats: a damaged archive is reported as what it should have been.
_ZIPPED = {"npz", "torch", "keras", "torchscript", "exported"}


def check_content(path: Path, fmt: Format) -> None:
    """Refuse an empty file, or one whose bytes are another format than ``fmt``."""
    kind = sniff(path)
    if kind == "empty":
        raise PortError(f"{path}: the file is empty")
    if kind == "damaged-zip" and fmt.name in _ZIPPED:
        raise PortError(
            f"{path}: a damaged {fmt.description} file: {fmt.description} files are zip archives, and this one's "
            f"directory cannot be read ({reading.zip_problem(path)})"
        )
    if kind == "damaged-caffe":  # only a file said to be Caffe's is called a damaged one
        if fmt.name == "caffe":
            raise PortError(f"{path}: a damaged Caffe model: its first field runs past the end of the file (truncated)")
        kind = "unknown"
    if kind == "damaged-tf" and fmt.name == "tf-checkpoint":
        raise PortError(f"{path}: {_KIND_NAMES[kind]}")
    if kind not in fmt.sniffed:
        hint = next(
            (f" (pass --from {f.name} if it is {f.description})" for f in FORMATS.values() if kind in f.sniffed), ""
        )
        raise PortError(f"{path}: expected {fmt.description} ({fmt.name}), but the file is {_KIND_NAMES[kind]}{hint}")


def _into(framework: str, p: Plan, into: Native | None) -> Native:
    """The model to load into, wiped to NaN first (saves building another)."""
    b, model = into if into is not None else built(framework, p)
    wipe(b, model, p)
    return b, model


@contextlib.contextmanager
def _memory_file() -> Iterator[tuple[str, Callable[[], bytes]]]:
    """A path whose writes stay in memory, for writers that take only a path (MXNet):
    a Linux memfd, else a file in the temporary directory. The disk is then written once,
    by ``files.Temporary``, which handles a full one."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("conformance", os.MFD_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}", lambda: os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as d:  # pragma: no cover - not Linux
        path = Path(d) / "file"
        yield str(path), path.read_bytes


# --------------------------------------------------------------------------------------
# Canonical files: safetensors and npz
# --------------------------------------------------------------------------------------


def _recorded(value: object) -> bool | None:
    """transform_input as a file's metadata spells it (``str(bool)``, or a JSON bool)."""
    if isinstance(value, bool):
        return value
    return {"True": True, "False": False}.get(value) if isinstance(value, str) else None


def _read_safetensors(path: Path, p: Plan) -> Raw:
    header = reading.safetensors(path)
    bounds.check_sizes(path, header.tensors, bounds.ceiling(p))
    metadata = header.metadata
    return Raw(
        header.tensors,
        naming.detect(header.tensors),
        [],
        digest=metadata.get("sha256"),
        transform_input=_recorded(metadata.get("transform_input")),
        variant=metadata.get("variant"),
    )


def _write_safetensors(params: Params, p: Plan) -> Written:
    return to_bytes(params, p), None


# The suite's .npz records the plan's options in the zip comment, which numpy ignores:
# a member would be one more array to every reader that loads the file by name.
NPZ_COMMENT = b"googlenet-canonical "


def _read_npz(path: Path, p: Plan) -> Raw:
    limit = bounds.ceiling(p)
    tensors = reading.npz(path, limit.tensor + 4096, limit.total)
    bounds.check_sizes(path, tensors, limit)
    with zipfile.ZipFile(path) as z:
        comment = z.comment  # at most 64 KB: the zip format's field is 16 bits
    options: Any = None
    if comment.startswith(NPZ_COMMENT):
        with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
            options = json.loads(comment[len(NPZ_COMMENT) :])
    if not isinstance(options, dict):
        return Raw(tensors, naming.detect(tensors), [])
    variant = options.get("variant")
    return Raw(
        tensors,
        naming.detect(tensors),
        [],
        transform_input=_recorded(options.get("transform_input")),
        variant=variant if isinstance(variant, str) else None,
    )


def _write_npz(params: Params, p: Plan) -> Written:
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    with zipfile.ZipFile(buffer, "a") as z:
        z.comment = NPZ_COMMENT + json.dumps({"variant": p.variant.name, **p.options.asdict()}).encode()
    return buffer.getvalue(), None


def _load_by_name(fmt_name: str) -> Callable[[Path, Plan, str, Native | None], Native]:
    """Files of canonical tensors (or GluonCV's names): read them through the naming
    table into the format's framework (the reference one for canonical files)."""

    def load(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
        fmt = FORMATS[fmt_name]
        raw = fmt.read(path, p)
        tensors, _ = naming.to_canonical({k: t.load() for k, t in raw.tensors.items()}, raw.scheme, p)
        return built(fmt.framework or reference, p, tensors)

    return load


# --------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------


def _torch_tensor(value) -> Tensor:
    """A loaded torch tensor as declared: its shape and dtype, read (copied into numpy)
    only when accepted. An expanded tensor declares its full shape while its storage
    holds one element: the shape is checked before anything is materialised."""
    import torch

    shape = tuple(int(d) for d in value.shape)
    if value.layout != torch.strided:
        return Tensor(shape, "sparse", reading._refused, f"a sparse tensor ({value.layout}), not dense weights")
    if value.is_quantized:
        return Tensor(shape, "quantised", reading._refused, f"quantised ({value.dtype}): dequantise it first")
    if value.dtype == torch.bfloat16:
        return Tensor(shape, "bfloat16", lambda: value.detach().float().contiguous().numpy().copy())
    try:
        dtype = np.dtype(str(value.dtype).removeprefix("torch."))
    except TypeError:
        return Tensor(shape, str(value.dtype), reading._refused, f"of dtype {value.dtype}, which numpy cannot hold")
    return Tensor(shape, dtype, lambda: value.detach().contiguous().numpy().copy())


def _read_torch(path: Path, p: Plan) -> Raw:
    limit = bounds.ceiling(p)
    zipped = zipfile.is_zipfile(path)
    if zipped:
        infos = reading.zip_members(path, limit.total, limit.total)
        for info in infos:
            if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE:
                raise PortError(f"{path}: its pickle declares {info.file_size:,} bytes; a state_dict's is a few KB")
        reading.check_crcs(path)  # PyTorch's own reader does not
        _replay_zipped_pickles(path, infos)
    elif path.stat().st_size > bounds.budget(p).total:  # a legacy pickle reads its storages whole
        raise PortError(
            f"{path}: {path.stat().st_size:,} bytes is more than {p.variant.name} with {p.num_classes} classes "
            f"can hold ({bounds.budget(p).describe()}); pass --num-classes if it has more classes"
        )
    else:
        pickles.check_legacy(path)
    obj = _torch_load(path, mmap=zipped)
    notes = []
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            notes.append(f"took the state_dict under the {wrapper!r} key")
            break
    import torch

    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(
            f"{path}: expected a state_dict (a dict of tensors, possibly under 'state_dict' or 'model'), "
            f"got {type(obj).__name__}"
        )
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
        notes.append("removed the 'module.' prefix (DataParallel)")
    dropped = sum(str(k).endswith("num_batches_tracked") for k in obj)
    if dropped:
        notes.append(f"dropped {dropped} num_batches_tracked counters (not weights)")
    tensors = {str(k): _torch_tensor(v) for k, v in obj.items() if not str(k).endswith("num_batches_tracked")}
    bounds.check_sizes(path, tensors, limit)
    return Raw(tensors, naming.detect(tensors), notes)


def _replay_zipped_pickles(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Each ``data.pkl`` replayed without allocating (``conformance.formats.pickles``):
    a storage at most its ``data/<key>`` member's bytes, ``bytearray(N)`` at most the
    archive's."""
    for info in infos:
        if not info.filename.endswith("data.pkl"):
            continue
        root = info.filename[: -len("data.pkl")]
        members = {
            i.filename[len(root) + len("data/") :]: i.file_size for i in infos if i.filename.startswith(f"{root}data/")
        }
        pickles.check_zipped(reading.read_member(path, info.filename), info.filename, members, path.stat().st_size)


def _torch_load(path: Path, mmap: bool):
    """``torch.load`` with ``weights_only`` (no code runs); ``mmap`` maps the storages
    from the file instead of reading them, so nothing is allocated until accepted."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise PortError(
            f"{path}: refusing to load: the pickle needs more than tensors and plain containers, and "
            f"running its code is unsafe (torch.load weights_only=True: {first})"
        ) from None


def _write_torch(params: Params, p: Plan) -> Written:
    import torch

    b, model = built("torch", p, params)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # with num_batches_tracked: torchvision loads it strictly
    return buffer.getvalue(), (b, model)


def _load_torch(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    import torch

    b, model = _into("torch", p, into)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return b, model


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------


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


def _keras_layout(p: Plan, model: Callable[[], Native]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HDF5 dataset path -> (canonical key, Keras shape) in what ``save_weights`` writes
    for ``p``: found by saving a model (``model()``, a Keras model of ``p``) whose every
    tensor holds its own index, so no guess about Keras's layout is made here."""
    import h5py

    if p not in _LAYOUTS:
        k, m = model()
        shapes = canonical_shapes(p)
        keys = list(shapes)
        k.from_canonical(m, {key: np.full(shapes[key], i + 1, np.float32) for i, key in enumerate(keys)})
        with h5py.File(io.BytesIO(_keras_bytes(m, ".weights.h5")), "r") as f:
            _LAYOUTS[p] = {name: (keys[int(ds[(0,) * ds.ndim]) - 1], tuple(ds.shape)) for name, ds in _h5_datasets(f)}
    return _LAYOUTS[p]


def _once(make: Callable[[], Native]) -> Callable[[], Native]:
    """``make``, called at most once."""
    made: list[Native] = []

    def get() -> Native:
        if not made:
            made.append(make())
        return made[0]

    return get


def _h5_datasets(f) -> Iterator[tuple[str, Any]]:
    """Every dataset of an HDF5 file, refusing links that leave it (external and soft
    links, external or virtual storage), more objects than any weights file holds, and
    an object reached twice: hard links may make the tree a graph, even a cycle (a group
    linked back to the root), which a walk by name would follow without end. Each
    object is entered once, by its address in the file, and paths are bounded, so the
    walk costs what the file's own objects cost."""
    import h5py

    seen = 0
    entered = {h5py.h5o.get_info(f.id).addr}
    stack = [("", f)]
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
    source: Callable[[], Any], p: Plan, src: Path, limit: bounds.Budget, model: Callable[[], Native]
) -> dict[str, Tensor]:
    """The datasets of a Keras weights file (``source()`` opens it with h5py) as
    canonical tensors: a dataset where ``p``'s layout has one gets its canonical key,
    any other keeps its HDF5 path (and is then reported as unexpected). Sizes are
    checked against ``limit`` first, before Keras is even imported (``model()`` builds
    a Keras model of ``p`` when the layout is needed)."""
    with source() as f:
        found = {path: (tuple(int(d) for d in ds.shape), ds.dtype) for path, ds in _h5_datasets(f)}
    bounds.check_sizes(
        src, {path: Tensor(shape, dtype, reading._refused) for path, (shape, dtype) in found.items()}, limit
    )
    from impl_keras.weights import table

    layout, rows, expected = _keras_layout(p, model), table(p), canonical_shapes(p)
    cache: dict[str, np.ndarray] = {}

    def loader(path: str, key: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if not cache:  # one pass reads every accepted dataset
                with source() as f:
                    cache.update({name: np.asarray(ds[()]) for name, ds in _h5_datasets(f) if name in layout})
            return np.ascontiguousarray(rows[key].to_canonical(cache[path]))

        return load

    tensors: dict[str, Tensor] = {}
    for path, (shape, dtype) in found.items():
        if path in layout:
            key, keras_shape = layout[path]
            canonical = expected[key] if shape == keras_shape else _keras_to_canonical_shape(shape)
            tensors[key] = Tensor(canonical, dtype, loader(path, key), where=f"HDF5 {path} {shape}")
        else:
            tensors[path] = Tensor(shape, dtype, reading._refused)
    return tensors


def _read_keras_weights(path: Path, p: Plan) -> Raw:
    import h5py

    p = bounds.full(p)
    model = _once(lambda: built("keras", p))  # one Keras model: the layout, then the native load
    tensors = _h5_tensors(lambda: h5py.File(path, "r"), p, path, bounds.ceiling(p), model)
    with h5py.File(path, "r") as f:
        digest = f.attrs.get(DIGEST_ATTRIBUTE)
        recorded = None
        if TRANSFORM_ATTRIBUTE in f.attrs and f.attrs.get_id(TRANSFORM_ATTRIBUTE).shape == ():  # one value, no more
            recorded = _recorded(bool(f.attrs[TRANSFORM_ATTRIBUTE]))
    loadable = path.name.endswith(".weights.h5")  # Keras's load_weights refuses other names
    native = (lambda q: _load_keras_weights(path, q, "", model() if q == p else None)) if loadable else None
    return Raw(
        tensors,
        "canonical",
        [],
        native=native,
        digest=digest if isinstance(digest, str) else None,
        transform_input=recorded,
    )


DIGEST_ATTRIBUTE = "conformance_sha256"  # the suite's own .weights.h5: a digest of its tensors
TRANSFORM_ATTRIBUTE = "conformance_transform_input"  # and the plan's transform_input, which Keras ignores


def _write_keras_weights(params: Params, p: Plan) -> Written:
    """What ``save_weights`` writes, plus a root attribute with the SHA-256 of the
    canonical tensors (``reading.tensor_digest``): HDF5 keeps no checksum of its data, so
    without it a flipped byte would be read as a weight. Keras ignores the attribute."""
    import h5py

    b, model = built("keras", p, params)
    buffer = io.BytesIO(_keras_bytes(model, ".weights.h5"))
    with h5py.File(buffer, "r+") as f:
        f.attrs[DIGEST_ATTRIBUTE] = reading.tensor_digest(params)
        f.attrs[TRANSFORM_ATTRIBUTE] = np.bool_(p.options.transform_input)
    return buffer.getvalue(), (b, model)


def _load_keras_weights(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    b, model = _into("keras", p, into)
    model.load_weights(str(path))
    return b, model


def _read_keras(path: Path, p: Plan) -> Raw:
    import h5py

    limit = bounds.budget(p)
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
    _check_keras_config(path, options, p)
    q = with_options(
        p, aux_logits=bool(options.get("aux_logits")), transform_input=bool(options.get("transform_input"))
    )
    inner = reading.read_member(path, "model.weights.h5")
    tensors = _h5_tensors(lambda: h5py.File(io.BytesIO(inner), "r"), q, path, limit, lambda: built("keras", q))
    loadable = path.name.endswith(".keras")  # load_model takes other names for other formats
    return Raw(
        tensors,
        "canonical",
        [],
        config=options,
        native=(lambda r: _load_keras(path, r, "", None)) if loadable else None,
        transform_input=q.options.transform_input,
        variant=q.variant.name,
    )


def _check_keras_config(path: Path, options: dict[str, Any], p: Plan) -> None:
    """The model the config builds, before Keras builds it: this variant, a class count
    within bounds and the one asked for."""
    variant, classes = options.get("variant"), options.get("num_classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 1 <= classes <= MAX_CLASSES:
        raise PortError(f"{path}: its config declares {classes!r} classes; expected 1 to {MAX_CLASSES:,}")
    if (variant, classes) != (p.variant.name, p.num_classes):
        raise PortError(
            f"{path}: this Keras model is {variant} with {classes} classes; "
            f"pass --variant {variant} --num-classes {classes}"
        )


def _write_keras(params: Params, p: Plan) -> Written:
    b, model = built("keras", p, params)
    return _keras_bytes(model, ".keras"), (b, model)


def _load_keras(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    import keras

    return backend("keras"), keras.models.load_model(path)  # a .keras file builds its own model


# --------------------------------------------------------------------------------------
# MXNet Gluon and GluonCV
# --------------------------------------------------------------------------------------


def _write_mxnet(params: Params, p: Plan) -> Written:
    b, model = built("mxnet", p, params)
    with _memory_file() as (path, contents):
        model.save_parameters(path)
        return contents(), (b, model)


def _load_mxnet(path: Path, p: Plan, reference: str, into: Native | None) -> Native:
    b, model = _into("mxnet", p, into)
    model.load_parameters(str(path))  # strict: no missing, no extra parameter
    return b, model


def _write_gluoncv(params: Params, p: Plan) -> Written:
    backend("mxnet")
    import mxnet as mx

    renamed = naming.from_canonical(params, "gluoncv", p)
    with _memory_file() as (path, contents):
        mx.nd.save(path, {k: mx.nd.array(v, dtype=np.float32) for k, v in renamed.items()})
        return contents(), None


# --------------------------------------------------------------------------------------
# Caffe (read only)
# --------------------------------------------------------------------------------------


def _read_caffe(path: Path, p: Plan) -> Raw:
    """A ``.caffemodel`` through ``conformance.formats.caffe``: the file's size checked
    against what the variant can hold before protobuf parses it, every blob's declared
    shape before its values are copied."""
    try:
        from google.protobuf import message  # noqa: F401 - only to say how to install it
    except ImportError:
        raise PortError(f"{path}: reading a .caffemodel needs protobuf: pip install -e '.[caffe]'") from None
    full = bounds.full(p)
    try:
        names = naming.caffe_names(full)
    except naming.NamingError as e:
        raise PortError(f"{path}: a .caffemodel holds Caffe's bvlc_googlenet (--variant googlenet_lrn); {e}") from None
    shapes = canonical_shapes(full)
    most = sum(8 * int(np.prod(s)) for s in shapes.values()) + (1 << 20)  # every blob float64, 1 MB of layers
    try:
        net, layer_format, layers = caffe.parse(path, most)
    except caffe.TooLarge as e:
        raise PortError(
            f"{path}: {e.size:,} bytes is more than {p.variant.name} with {p.num_classes} classes can hold "
            f"({most / 1e6:.0f} MB); pass --num-classes if it has more classes"
        ) from None
    weighted = sum(bool(layer.blobs) for layer in layers)
    if not weighted:
        raise PortError(
            f"{path}: none of its {len(layers)} layers holds weights (a network description, or a 2013 Caffe file "
            f"whose V0 layers keep them where this reader does not look)"
        )
    tensors = caffe.tensors(layers, {theirs: shapes[ours] for ours, theirs in names.items()})
    bounds.check_sizes(path, tensors, bounds.ceiling(p))
    _check_caffe_lrn(path, p, layers)
    notes = [f"Caffe network {net!r}: {len(layers)} layers ({layer_format} format), {weighted} with weights"]
    legacy = sum(t.where.startswith("legacy") for t in tensors.values())
    if legacy:
        notes.append(f"read {legacy} blobs in Caffe's legacy 4-D shape as the matrices and vectors they hold")
    return Raw(tensors, "caffe", notes)


def _check_caffe_lrn(path: Path, p: Plan, layers: list[caffe.Layer]) -> None:
    """The file lists every layer of its network (Caffe writes them all): LRN layers say
    which network it is, where the weights alone cannot (LRN has none)."""
    lrn = [layer.name for layer in layers if layer.type.upper() == "LRN"]
    wants = any(isinstance(stage, LRN) for stage in p.stages)
    if lrn and not wants:
        raise PortError(
            f"{path}: its network has LocalResponseNorm layers ({', '.join(lrn)}): this is `googlenet_lrn`, "
            f"not `{p.variant.name}`"
        )
    if wants and not lrn and any(not layer.blobs for layer in layers):
        raise PortError(
            f"{path}: its network lists its layers and has no LocalResponseNorm among them: "
            f"this is not `{p.variant.name}` (`googlenet` is the paper network without LRN)"
        )


# --------------------------------------------------------------------------------------
# TensorFlow checkpoints (read only): TF-slim's inception_v1
# --------------------------------------------------------------------------------------


def _read_tf(path: Path, p: Plan) -> Raw:
    """A TensorFlow checkpoint through ``conformance.formats.tfcheckpoint``: the index's
    declarations and the shards' sizes checked before any value is read."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log
    try:
        with quiet_stderr():  # its absl and oneDNN lines, printed before its logging starts
            import tensorflow  # noqa: F401 - only to say how to install it
    except ImportError:
        raise PortError(
            f"{path}: reading a TensorFlow checkpoint needs tensorflow: pip install -e '.[keras]'"
        ) from None
    try:
        names = naming.slim_names(p)
    except naming.NamingError as e:
        raise PortError(
            f"{path}: a TensorFlow checkpoint is read as TF-slim's inception_v1 (--variant googlenet_slim); {e}"
        ) from None
    tensors = tfcheckpoint.declared(path, p, {theirs: ours for ours, theirs in names.items()}, canonical_shapes(p))
    counters = [k for k, t in tensors.items() if k in tfcheckpoint.COUNTERS and tfcheckpoint.counter(t)]
    for k in counters:
        del tensors[k]
    bounds.check_sizes(path, tensors, bounds.ceiling(p))
    missing = [f"{theirs!r} ({ours})" for ours, theirs in names.items() if theirs not in tensors]
    if missing:  # named as the checkpoint names them; extra and mis-shaped ones as every format's are
        more = f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""
        raise PortError(f"{path}: missing variable {', '.join(missing[:4])}{more}")
    tfcheckpoint.check_data(path, tensors)
    notes = [f"TensorFlow checkpoint {path.name}: {len(tensors)} variables (the .meta graph is not read)"]
    notes += [f"dropped {', '.join(counters)} (a training counter, not a weight)"] if counters else []
    return Raw(tensors, "slim", notes)


def _write_tf(params: Params, p: Plan) -> Written:
    raise PortError("--to tf-checkpoint: a TensorFlow checkpoint is read, not written; write another format")


def _write_caffe(params: Params, p: Plan) -> Written:
    raise PortError("--to caffe: a .caffemodel is read, not written; write another format")


# How a reader's process loads each written format: one line of Python, run as printed
# (tests/test_port_transform.py runs each in a fresh process and wants stderr empty).
_BUILT = "import {framework}; model = {framework}.build({build}); "
_MXNET = "import numpy; numpy.bool = bool; import mxnet; "  # MXNet 1.9 uses the alias numpy 1.24 removed

# fmt: off
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("safetensors", (".safetensors",), "canonical safetensors", None, ("safetensors",),
           _read_safetensors, _write_safetensors, _load_by_name("safetensors"), checksum="digest",
           loading="from conformance import canonical; " + _BUILT
                   + "{framework}.from_canonical(model, canonical.load({path}))",
           keeps_transform="its metadata"),
    Format("npz", (".npz",), "canonical numpy archive", None, ("npz",),
           _read_npz, _write_npz, _load_by_name("npz"), checksum="zip CRC-32",
           loading="import numpy; " + _BUILT + "{framework}.from_canonical(model, dict(numpy.load({path})))",
           keeps_transform="its zip comment"),
    Format("torch", (".pth", ".pt"), "PyTorch state_dict", "torch", ("torch", "pickle"),
           _read_torch, _write_torch, _load_torch, checksum="zip CRC-32",
           loading="import torch; " + _BUILT + "model.load_state_dict(torch.load({path}, weights_only=True))"),
    Format("keras-weights", (".weights.h5",), "Keras weights", "keras", ("hdf5",),
           _read_keras_weights, _write_keras_weights, _load_keras_weights, names=(".weights.h5",),
           checksum="digest", loading=_BUILT + "model.load_weights({path})",
           keeps_transform="an attribute Keras ignores"),
    Format("keras", (".keras",), "Keras model", "keras", ("keras",),
           _read_keras, _write_keras, _load_keras, names=(".keras",), checksum="zip CRC-32",
           loading="import impl_keras, keras; model = keras.saving.load_model({path})  "
                   "# impl_keras first: it registers the classes the file names and imports TensorFlow quietly",
           keeps_transform="its config"),
    Format("mxnet", (".params",), "MXNet Gluon parameters", "mxnet", ("mxnet",),
           _read_mxnet, _write_mxnet, _load_mxnet, loading=_BUILT + "model.load_parameters({path})"),
    # Only by name (--to gluoncv): .params files are read whatever their naming.
    Format("gluoncv", (".params",), "GluonCV parameters", "mxnet", ("mxnet",),
           _read_mxnet, _write_gluoncv, _load_by_name("gluoncv"),
           loading=_MXNET + "arrays = mxnet.nd.load({path})  "
                   "# GluonCV's names: gluoncv.model_zoo.googlenet().load_parameters(path) loads them"),
    # Read only: its tensors are built into the reference framework, as canonical files are.
    Format("caffe", (".caffemodel",), "Caffe model", None, ("caffe",),
           _read_caffe, _write_caffe, _load_by_name("caffe"), writable=False),
    # Read only, by its prefix (the .index and .data-* files), TF-slim's names.
    Format("tf-checkpoint", (".ckpt", ".index"), "TensorFlow checkpoint", None, ("tf-checkpoint",),
           _read_tf, _write_tf, _load_by_name("tf-checkpoint"), writable=False,
           checksum="CRC32C of each tensor (TensorFlow checks it)"),
)}
# fmt: on


# fmt: off
FORMATS.update({f.name: f for f in (
    Format("onnx", (".onnx",), "ONNX model", "torch", ("onnx",),
           deploy.read_onnx, deploy.write_onnx, deploy.load_onnx,
           loading="import onnxruntime; session = onnxruntime.InferenceSession({path}, "
                   "providers=['CPUExecutionProvider'])  # input 'x' (NCHW), outputs 'logits' (, 'aux2', 'aux1')",
           keeps_transform="the graph"),
    # Only by name (--to torchscript): .pt is a state_dict unless told.
    Format("torchscript", (".pt",), "TorchScript module", "torch", ("torchscript",),
           deploy.read_torchscript, deploy.write_torchscript, deploy.load_torchscript,
           loading="import torch; model = torch.jit.load({path})  "
                   "# model.forward_stages(x, with_aux=True) gives the aux logits",
           keeps_transform="the graph", readable=False),
    Format("exported", (".pt2",), "PyTorch ExportedProgram", "torch", ("exported",),
           deploy.read_exported, deploy.write_exported, deploy.load_exported,
           loading="import torch; model = torch.export.load({path}).module()",
           limits="aux heads: not in the graph (it returns the logits, as the model does in eval); "
                  "their weights stay in its state_dict",
           keeps_transform="the graph", readable=False),
    # TensorFlow alone: the two variables keep its start-up lines (absl, oneDNN, CPU
    # features) off stderr; TF_ENABLE_ONEDNN_OPTS=0 runs TensorFlow's own kernels.
    Format("savedmodel", (), "TensorFlow SavedModel", "keras", (),
           deploy.read_savedmodel, deploy.write_savedmodel, deploy.load_savedmodel,
           loading="import os; os.environ.update(TF_CPP_MIN_LOG_LEVEL='2', TF_ENABLE_ONEDNN_OPTS='0'); "
                   "import tensorflow as tf; model = tf.saved_model.load({path})  # model.serve(x), x NHWC",
           layout="directory",
           limits="weights: none under canonical names (a SavedModel keeps graph variables): its outputs prove it",
           keeps_transform="the graph", readable=False),
    Format("gluon-export", ("-symbol.json",), "Gluon exported model", "mxnet", ("mxnet-symbol",),
           deploy.read_gluon, deploy.write_gluon, deploy.load_gluon, names=("-symbol.json",),
           loading=_MXNET + "model = mxnet.gluon.SymbolBlock(mxnet.sym.load({path}), "
                   "mxnet.sym.var('data', dtype='float32')); model.collect_params().load({params})  "
                   "# the input's dtype given: SymbolBlock.imports leaves it open and warns",
           layout="pair", limits="aux heads: not in the pair (the inference graph returns the logits)",
           keeps_transform="the graph"),
)})
# fmt: on


def unchecked(fmt: Format, raw: Raw) -> str:
    """What port's log says of a source whose bytes no checksum covers ("" if one does)."""
    if fmt.checksum and (fmt.checksum != "digest" or raw.digest is not None):
        return ""
    what = (
        "this file records no SHA-256 of its tensors (written by another tool)"
        if fmt.checksum
        else (f"{fmt.description} files carry no checksum")
    )
    return (
        f"{what}: a changed byte in a weight cannot be detected and is read as a weight "
        f"(the outputs are compared with what was read, not with what was first written)"
    )


def infer(path: Path, explicit: str | None, option: str) -> Format:
    """The format named by ``--from``/``--to``, else the one the file name says."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise PortError(f"{option}: unknown format {explicit!r}; expected one of {', '.join(FORMATS)}")
        return FORMATS[explicit]
    if tfcheckpoint.prefix(path) is not None:  # a prefix has no suffix of its own (model.ckpt-1000)
        return FORMATS["tf-checkpoint"]
    for f in FORMATS.values():
        if path.name.endswith(f.suffixes):
            return f
    suffixes = ", ".join(dict.fromkeys(s for f in FORMATS.values() for s in f.suffixes))
    raise PortError(f"{path}: cannot tell the format from the name (known: {suffixes}); pass {option}")


def read(path: Path, fmt: Format, p: Plan) -> Raw:
    """Read what ``path`` declares (no tensor yet); corrupt, truncated or misleading
    files become a PortError naming the file."""
    with _reading(path, fmt):
        check_content(path, fmt)
        return fmt.read(path, p)


def materialise(path: Path, fmt: Format, raw: Raw) -> dict[str, np.ndarray]:
    """Every declared tensor read (call once the declarations were accepted), the
    file's recorded SHA-256 checked where it has one."""
    with _reading(path, fmt):
        arrays = {k: t.load() for k, t in raw.tensors.items()}
    if raw.digest is not None and reading.tensor_digest(arrays) != raw.digest:
        raise PortError(
            f"{path}: damaged: its tensors do not match the SHA-256 recorded in its metadata "
            f"(the file changed after it was written)"
        )
    return arrays


@contextlib.contextmanager
def _reading(path: Path, fmt: Format) -> Iterator[None]:
    """The one place a reader's failure becomes a refusal: every exception a reader (or
    the library under it) raises is a PortError of one line naming the file."""
    try:
        yield
    except PortError as e:
        if "\n" in e.cli:
            raise PortError(one_line(e.cli)) from None
        raise
    except (Damaged, bounds.BoundsError) as e:
        message = one_line(str(e))
        raise PortError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt: the libraries' own errors, with the file named
        raise PortError(f"{path}: cannot read it as {fmt.description}: {type(e).__name__}: {meaningful(e)}") from None


def installed_reference() -> str:
    """The first installed framework (torch, keras, mxnet order), for canonical files."""
    for name in FRAMEWORKS:
        if load([name])[0]:
            return name
    raise PortError("no framework is installed: install one of torch, keras, mxnet to verify a port")
