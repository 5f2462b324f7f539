"""What a file is by its bytes, whatever its name says (:func:`sniff`), and the refusal
of a file whose bytes are not the format it was given as (:func:`check_content`)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from .. import reading
from . import caffe, orbax_files, tfcheckpoint
from .base import Format, PortError

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
    "msgpack": "a msgpack map (Flax's serialization)",
    "orbax": "an Orbax checkpoint directory",
    "directory": "a directory",
    "damaged-tf": "a damaged TensorFlow checkpoint (its .index has no table magic at its end: truncated or corrupt)",
    "unknown": "not a known checkpoint format",
}
_MXNET_MAGIC = (0x112).to_bytes(8, "little")


def sniff(path: Path) -> str:
    """What the bytes of ``path`` are, whatever its name says. A TensorFlow checkpoint
    is a prefix: its ``.index`` file says."""
    return sniff_probed(path, tfcheckpoint.prefix(path))


def sniff_probed(path: Path, tf_prefix: Path | None) -> str:
    """:func:`sniff` of a path whose TensorFlow checkpoint prefix was already looked
    for (``tf_prefix``: the prefix it names, or None)."""
    if tf_prefix is not None:
        return "tf-checkpoint" if tfcheckpoint.looks_like_index(tfcheckpoint.index(tf_prefix)) else "damaged-tf"
    if path.is_dir():
        return "orbax" if orbax_files.looks_like(path) else "directory"
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
    if _looks_like_msgpack(head):
        return "msgpack"
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


def _looks_like_msgpack(head: bytes) -> bool:
    """A msgpack map of at least one entry whose first key is a string, as Flax's
    ``to_bytes`` writes a state (a pickle's 0x80 is an empty map, never a state)."""
    skip = {0xDE: 3, 0xDF: 5}.get(head[0], 1 if 0x81 <= head[0] <= 0x8F else 0)
    return skip > 0 and len(head) > skip and (0xA1 <= head[skip] <= 0xBF or head[skip] in (0xD9, 0xDA, 0xDB))


# The zip-based formats: a damaged archive is reported as what it should have been.
_ZIPPED = {"npz", "torch", "keras", "torchscript", "exported"}


def check_content(path: Path, fmt: Format, known: Iterable[Format], kind: str) -> None:
    """Refuse an empty file, or one whose bytes (``kind``, as :func:`sniff` says) are
    another format than ``fmt`` (with a hint naming the format of ``known`` the bytes are)."""
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
        hint = next((f" (pass --from {f.name} if it is {f.description})" for f in known if kind in f.sniffed), "")
        raise PortError(f"{path}: expected {fmt.description} ({fmt.name}), but the file is {_KIND_NAMES[kind]}{hint}")
