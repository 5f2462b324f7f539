"""Caffe's ``.caffemodel``: a serialized ``NetParameter`` protobuf, read with the
protobuf library through the part of Caffe's schema that holds weights
(``caffe.proto`` beside this file, compiled to ``caffe_pb2.py``).

A ``.caffemodel`` lists every layer of the network (pools, ReLUs and LRNs too), each
with its name, its type and its blobs: blob 0 the weights, blob 1 the bias. Both of
Caffe's layer formats are read: ``layer`` (LayerParameter, Caffe since 2015) and
``layers`` (V1LayerParameter, the format of the published bvlc_googlenet.caffemodel,
2014). A blob gives its shape as ``shape`` or as the legacy 4-D num x channels x height
x width (V1 files: a fully connected layer's (1000, 1024) weights as 1 x 1 x 1000 x
1024); its values are float32 (``data``) or float64 (``double_data``).

Nothing is allocated before the file was checked against what the variant can hold:
its size (protobuf parses a message whole), and how many messages it holds. protobuf
allocates some 60 bytes for each message it parses, so a file of empty layers (2 bytes
each) would grow 30-fold in memory: :func:`count_messages` walks the envelope (each
field's tag and length, no value decoded) of the network, its layers and their blobs,
and refuses more than any GoogLeNet has, before protobuf parses anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..canonical import Params, canonical_shapes
from ..reading import Damaged, Tensor
from ..spec import LRN, Plan
from . import bounds, naming
from .base import FileContents, Format, PortError, Written, load_by_name

MAX_LAYER_NAME = 1024  # bytes; bvlc_googlenet's longest is 27
NET_FIELDS = {0x0A, 0x12, 0x1A, 0x20, 0x22, 0x28, 0x32, 0x38, 0x42}  # NetParameter's tags, fields 1-8
LAYER_FIELD = b"\xa2\x06"  # NetParameter.layer (field 100, length-delimited)

# What a GoogLeNet's .caffemodel holds at most (bvlc_googlenet's train_val: 159 layers, a
# layer at most 2 blobs and a dozen fields, a blob a shape and its values).
MAX_LAYERS = 4096
MAX_LAYER_FIELDS = 1024  # names, bottoms, tops, settings, blobs
MAX_BLOBS = 8  # weights and bias; BatchNorm has 3
MAX_BLOB_FIELDS = 64  # shape, values (packed: one field, as Caffe writes them), legacy dimensions
MAX_SHAPE_BYTES = 128  # 8 dimensions of at most 10 bytes, and their tags
BLOBS_FIELD = {2: 6, 100: 7}  # NetParameter's field of V1 ``layers`` / ``layer`` -> that layer's ``blobs``
SHAPE_FIELD = 7  # BlobProto.shape


def _varint(data: bytes, at: int) -> tuple[int, int] | None:
    """(value, position after it) of the varint at ``at``, or None if ``data`` ends first."""
    value = shift = 0
    for i in range(at, min(len(data), at + 10)):
        value |= (data[i] & 0x7F) << shift
        if data[i] < 0x80:
            return value, i + 1
        shift += 7
    return None


def looks_like(head: bytes, size: int) -> bool:
    """Whether ``head`` (a file's first bytes, ``size`` in all) starts as Caffe writes a
    ``NetParameter``: protobuf writes fields in field-number order as (number << 3 |
    wire type) then a length, so a network starts with its name (field 1: a short
    text), its V1 ``layers`` (field 2) or its ``layer`` (field 100), and a layer with one
    of its own fields. The parse decides; this only tells a ``.caffemodel`` from other files."""
    return _first_field(head, size) == "whole"


def cut_short(head: bytes, size: int) -> bool:
    """Whether ``head`` starts as a ``.caffemodel`` whose first field runs past the end
    of the file (a truncated one)."""
    return _first_field(head, size) == "cut"


def _first_field(head: bytes, size: int) -> str:
    """ "whole": a NetParameter's first field, inside the file; "cut": one whose length
    runs past the end; "": neither."""
    if head.startswith(LAYER_FIELD):
        tag, at = LAYER_FIELD, 2
    elif head[:1] and head[0] in NET_FIELDS:
        tag, at = head[:1], 1
    else:
        return ""
    if tag[0] in (0x20, 0x28, 0x38):  # a varint field first (input_dim, force_backward, debug_info): no length
        return "whole" if _varint(head, at) is not None else ""
    length = _varint(head, at)
    if length is None:
        return ""
    n, at = length
    whole = "whole" if at + n <= size else "cut"
    inner = head[at : at + n]
    if tag in (b"\x0a", b"\x1a"):  # the network's name, an input's name: short UTF-8 text
        if n > MAX_LAYER_NAME:
            return ""
        try:
            text = inner.decode("utf-8")
        except UnicodeDecodeError as e:
            return whole if e.start >= len(inner) - 3 and len(inner) < n else ""  # ``head`` ends inside a character
        return whole if text.isprintable() else ""
    if tag == b"\x22":  # packed input dimensions
        return whole
    # A message (a layer, a shape, a state): its first byte is a field tag, length-delimited or a varint.
    return whole if n == 0 or (inner[:1] != b"" and inner[0] >> 3 > 0 and inner[0] & 7 in (0, 2)) else ""


def looks_like_text(head: bytes) -> bool:
    """A ``.prototxt`` (Caffe's text format: the network, not its weights)."""
    text = head.lstrip()
    return text.startswith((b"name:", b"name :", b"layer {", b"layer{", b"layers {", b"input:", b"#"))


def _fields(data: bytes, start: int, end: int, limit: int, what: str) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end of its value) of each field of the message
    in ``data[start:end]``, from the tags and lengths alone; Damaged where they run past
    the message, or past ``limit`` fields."""
    at, count = start, 0
    while at < end:
        count += 1
        if count > limit:
            raise Damaged(f"{what} holds more than {limit:,} fields; a GoogLeNet's holds far fewer")
        key = _varint(data, at)
        if key is None or key[0] >> 3 == 0:
            raise Damaged(f"corrupt: a malformed field tag at byte {at:,} in {what}")
        tag, at = key
        wire, begin = tag & 7, at
        if wire == 0:
            value = _varint(data, at)
            at = value[1] if value is not None else end + 1
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            length = _varint(data, at)
            begin, at = (length[1], length[1] + length[0]) if length is not None else (at, end + 1)
        else:
            raise Damaged(
                f"corrupt: wire type {wire} at byte {begin:,} in {what} (protobuf groups: Caffe never writes them)"
            )
        if at > end:
            raise Damaged(f"truncated or corrupt: a field at byte {begin:,} runs past the end of {what}")
        yield tag >> 3, wire, begin, at


def count_messages(data: bytes) -> None:
    """Refuse a network of more layers, a layer of more blobs, a blob of a larger shape
    than a GoogLeNet has, before protobuf allocates one message per record."""
    layers = 0
    for field, wire, start, end in _fields(data, 0, len(data), MAX_LAYERS + 64, "the file"):
        if field not in BLOBS_FIELD or wire != 2:
            continue
        layers += 1
        if layers > MAX_LAYERS:
            raise Damaged(f"it holds more than {MAX_LAYERS:,} layers; bvlc_googlenet has 159")
        blobs = 0
        for f, w, s, e in _fields(data, start, end, MAX_LAYER_FIELDS, f"layer {layers}"):
            if f != BLOBS_FIELD[field] or w != 2:
                continue
            blobs += 1
            if blobs > MAX_BLOBS:
                raise Damaged(f"layer {layers} holds more than {MAX_BLOBS} blobs; a GoogLeNet layer has 2")
            shape = sum(
                se - ss
                for sf, sw, ss, se in _fields(data, s, e, MAX_BLOB_FIELDS, f"layer {layers} blob {blobs - 1}")
                if sf == SHAPE_FIELD and sw == 2
            )
            if shape > MAX_SHAPE_BYTES:
                raise Damaged(f"layer {layers} blob {blobs - 1}: a shape of {shape:,} bytes (8 dimensions take 88)")


@dataclass
class Layer:
    name: str
    type: str  # "Convolution" (current format) or "CONVOLUTION" (V1)
    blobs: list[tuple[Tensor, bool]]  # each blob, and whether its shape is the legacy 4-D one


def parse(path: Path, max_bytes: int) -> tuple[str, str, list[Layer]]:
    """(the network's name, its layer format, its layers) as the file declares them.
    A file larger than ``max_bytes`` is refused before it is read."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(size)
    from google.protobuf.message import DecodeError

    from . import caffe_pb2

    data = path.read_bytes()
    count_messages(data)
    try:
        net = caffe_pb2.NetParameter.FromString(data)
    except DecodeError as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Damaged(f"not a Caffe NetParameter protobuf (truncated or corrupt: {detail})") from None
    if len(net.layer) and len(net.layers):  # Caffe's upgrade_proto.cpp refuses these too
        raise Damaged("it holds layers in both formats ('layer' and the V1 'layers'), which Caffe refuses")
    if not len(net.layer) and not len(net.layers):
        raise Damaged("a Caffe NetParameter without any layer")
    if len(net.layer):
        layers = [_layer(layer, _text(layer.type, "a layer type")) for layer in net.layer]
        return _text(net.name, "the network's name"), "layer", layers
    type_name = caffe_pb2.V1LayerParameter.LayerType.Name
    layers = [_layer(layer, type_name(layer.type) if layer.HasField("type") else "NONE") for layer in net.layers]
    return _text(net.name, "the network's name"), "V1 layers", layers


def _text(value: str | bytes, what: str) -> str:
    """A string field: protobuf hands proto2 text that is not UTF-8 over as bytes."""
    if isinstance(value, bytes):
        raise Damaged(f"{what} is not UTF-8 text ({value[:40]!r})")
    return value


def _layer(layer, type_: str) -> Layer:
    name = _text(layer.name, "a layer name")
    return Layer(name, type_, _blobs(name, layer.blobs))


class TooLarge(ValueError):
    """A file larger than the variant can need (the caller words the bound)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _blobs(layer: str, blobs) -> list[tuple[Tensor, bool]]:
    return [_blob(blob, f"layer {layer!r} blob {i}") for i, blob in enumerate(blobs)]


def _blob(blob, what: str) -> tuple[Tensor, bool]:
    """A blob as a Tensor of its declared shape; Caffe's own rule for which shape counts
    (``Blob::FromProto``): the legacy fields when any is set, else ``shape``."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    shape = (blob.num, blob.channels, blob.height, blob.width) if legacy else tuple(blob.shape.dim)
    if len(shape) > 8 or any(d < 0 for d in shape):
        raise Damaged(f"{what} declares shape {list(shape)}")
    if len(blob.data) and len(blob.double_data):
        raise Damaged(f"{what} holds both float and double values")
    values, dtype = (blob.double_data, np.dtype("<f8")) if len(blob.double_data) else (blob.data, np.dtype("<f4"))
    count = int(np.prod(shape, dtype=object))
    if len(values) != count:
        raise Damaged(f"{what} declares {list(shape)} ({count:,} values) but holds {len(values):,}")

    def load() -> np.ndarray:
        # protobuf keeps a packed float as a C float: this copies its bits unchanged
        return np.array(values, dtype).reshape(shape)

    return Tensor(shape, dtype, load), legacy


def as_declared(tensor: Tensor, legacy: bool, expected: tuple[int, ...] | None) -> Tensor:
    """A legacy 4-D blob in the shape it stands for: Caffe compares it with a blob of
    fewer axes by padding those with leading ones (``Blob::ShapeEquals``), so a 1 x 1 x
    1000 x 1024 blob is a (1000, 1024) matrix."""
    if not legacy or expected is None or len(expected) >= 4:
        return tensor
    cut = 4 - len(expected)
    if any(d != 1 for d in tensor.shape[:cut]):
        return tensor  # reported as a shape mismatch, in the file's own 4 dimensions
    shape = tensor.shape[cut:]
    legacy_shape = " x ".join(map(str, tensor.shape))
    return Tensor(shape, tensor.dtype, lambda: tensor.load().reshape(shape), tensor.problem, f"legacy {legacy_shape}")


def tensors(layers: list[Layer], expected: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """Every blob under its key ``layer[i]`` (pycaffe's ``net.params[layer][i]``), legacy
    shapes read as Caffe reads them against ``expected`` (key -> shape)."""
    out: dict[str, Tensor] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        if len(layer.name.encode()) > MAX_LAYER_NAME:
            raise Damaged(f"a layer name of {len(layer.name.encode()):,} bytes")
        for i, (t, legacy) in enumerate(layer.blobs):
            key = f"{layer.name}[{i}]"
            if key in out:
                raise Damaged(f"two layers named {layer.name!r} hold weights")
            out[key] = as_declared(t, legacy, expected.get(key))
    return out


def _read_caffe(path: Path, plan: Plan) -> FileContents:
    """A ``.caffemodel`` as the ``caffe`` format reads it (:func:`parse`): the file's
    size checked against what the variant can hold before protobuf parses it, every
    blob's declared shape before its values are copied."""
    try:
        from google.protobuf import message  # noqa: F401 - only to say how to install it
    except ImportError:
        raise PortError(f"{path}: reading a .caffemodel needs protobuf: pip install -e '.[caffe]'") from None
    full = bounds.full(plan)
    try:
        names = naming.caffe_names(full)
    except naming.NamingError as e:
        raise PortError(f"{path}: a .caffemodel holds Caffe's bvlc_googlenet (--variant googlenet_lrn); {e}") from None
    shapes = canonical_shapes(full)
    most = sum(8 * int(np.prod(s)) for s in shapes.values()) + (1 << 20)  # every blob float64, 1 MB of layers
    try:
        net, layer_format, layers = parse(path, most)
    except TooLarge as e:
        raise PortError(
            f"{path}: {e.size:,} bytes is more than {plan.variant.name} with {plan.num_classes} classes can hold "
            f"({most / 1e6:.0f} MB); pass --num-classes if it has more classes"
        ) from None
    weighted = sum(bool(layer.blobs) for layer in layers)
    if not weighted:
        raise PortError(
            f"{path}: none of its {len(layers)} layers holds weights (a network description, or a 2013 Caffe file "
            f"whose V0 layers keep them where this reader does not look)"
        )
    found = tensors(layers, {theirs: shapes[ours] for ours, theirs in names.items()})
    bounds.check_sizes(path, found, bounds.ceiling(plan))
    _check_caffe_lrn(path, plan, layers)
    notes = [f"Caffe network {net!r}: {len(layers)} layers ({layer_format} format), {weighted} with weights"]
    legacy = sum(t.where.startswith("legacy") for t in found.values())
    if legacy:
        notes.append(f"read {legacy} blobs in Caffe's legacy 4-D shape as the matrices and vectors they hold")
    return FileContents(found, "caffe", notes)


def _check_caffe_lrn(path: Path, plan: Plan, layers: list[Layer]) -> None:
    """The file lists every layer of its network (Caffe writes them all): LRN layers say
    which network it is, where the weights alone cannot (LRN has none)."""
    lrn = [layer.name for layer in layers if layer.type.upper() == "LRN"]
    wants = any(isinstance(stage, LRN) for stage in plan.stages)
    if lrn and not wants:
        raise PortError(
            f"{path}: its network has LocalResponseNorm layers ({', '.join(lrn)}): this is `googlenet_lrn`, "
            f"not `{plan.variant.name}`"
        )
    if wants and not lrn and any(not layer.blobs for layer in layers):
        raise PortError(
            f"{path}: its network lists its layers and has no LocalResponseNorm among them: "
            f"this is not `{plan.variant.name}` (`googlenet` is the paper network without LRN)"
        )


def _write_caffe(params: Params, plan: Plan) -> Written:
    raise PortError("--to caffe: a .caffemodel is read, not written; write another format")


# fmt: off
ENTRIES: tuple[Format, ...] = (
    # Read only: its tensors are built into the reference framework, as canonical files are.
    Format("caffe", (".caffemodel",), "Caffe model", None, ("caffe",),
           _read_caffe, _write_caffe, load_by_name(_read_caffe, None), writable=False),
)
# fmt: on
