"""TF-slim's inception_v1, written down independently of the suite (no ``conformance``
import): its variables under slim's names and TensorFlow's layouts, seeded values,
a TF1-style checkpoint written with TensorFlow's own writer, and a plain PyTorch
forward from the published facts of ``tf_slim/nets/inception_v1.py``
(https://github.com/google-research/tf-slim/blob/master/tf_slim/nets/inception_v1.py):

* every conv and pool pads as TensorFlow's SAME, asymmetric at stride 2;
* every conv is conv (no bias) -> BatchNorm without scale (eps 0.001) -> ReLU;
* branch 2 ("5x5") is a 3x3 conv, ``Conv2d_0b_3x3`` (``Conv2d_0a_3x3`` in Mixed_5b);
* branch 3 is a 3x3/1 SAME max pool, then a 1x1 conv;
* the pool before Mixed_5b is 2x2/2; the head a 7x7/1 VALID average pool, dropout,
  and a 1x1 conv with biases to 1001 classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SCOPE = "InceptionV1"
EPS = 0.001
# scope, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3), pool projection
MIXED = (
    ("Mixed_3b", 64, 96, 128, 16, 32, 32),
    ("Mixed_3c", 128, 128, 192, 32, 96, 64),
    ("Mixed_4b", 192, 96, 208, 16, 48, 64),
    ("Mixed_4c", 160, 112, 224, 24, 64, 64),
    ("Mixed_4d", 128, 128, 256, 24, 64, 64),
    ("Mixed_4e", 112, 144, 288, 32, 64, 64),
    ("Mixed_4f", 256, 160, 320, 32, 128, 128),
    ("Mixed_5b", 256, 160, 320, 32, 128, 128),
    ("Mixed_5c", 384, 192, 384, 48, 128, 128),
)
POOL_BEFORE = {"Mixed_3b": (3, 2), "Mixed_4b": (3, 2), "Mixed_5b": (2, 2)}  # MaxPool_3a_3x3, 4a_3x3, 5a_2x2


def branch2_second(block: str) -> str:
    return "Conv2d_0a_3x3" if block == "Mixed_5b" else "Conv2d_0b_3x3"  # upstream's own name in Mixed_5b


def convs() -> list[tuple[str, int, int, int]]:
    """(scope, in, out, kernel) of every conv unit, in graph order."""
    out = [
        (f"{SCOPE}/Conv2d_1a_7x7", 3, 64, 7),
        (f"{SCOPE}/Conv2d_2b_1x1", 64, 64, 1),
        (f"{SCOPE}/Conv2d_2c_3x3", 64, 192, 3),
    ]
    c = 192
    for block, b0, b1r, b1, b2r, b2, b3 in MIXED:
        s = f"{SCOPE}/{block}"
        out += [
            (f"{s}/Branch_0/Conv2d_0a_1x1", c, b0, 1),
            (f"{s}/Branch_1/Conv2d_0a_1x1", c, b1r, 1),
            (f"{s}/Branch_1/Conv2d_0b_3x3", b1r, b1, 3),
            (f"{s}/Branch_2/Conv2d_0a_1x1", c, b2r, 1),
            (f"{s}/Branch_2/{branch2_second(block)}", b2r, b2, 3),
            (f"{s}/Branch_3/Conv2d_0b_1x1", c, b3, 1),
        ]
        c = b0 + b1 + b2 + b3
    return out


def variables(classes: int = 1001) -> dict[str, tuple[int, ...]]:
    """Every variable of the graph and its TensorFlow shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for scope, cin, cout, k in convs():
        shapes[f"{scope}/weights"] = (k, k, cin, cout)  # HWIO
        for v in ("beta", "moving_mean", "moving_variance"):
            shapes[f"{scope}/BatchNorm/{v}"] = (cout,)
    shapes[f"{SCOPE}/Logits/Conv2d_0c_1x1/weights"] = (1, 1, 1024, classes)
    shapes[f"{SCOPE}/Logits/Conv2d_0c_1x1/biases"] = (classes,)
    return shapes


def seeded(seed: int = 0, classes: int = 1001) -> dict[str, np.ndarray]:
    """Values that keep activations O(1): He-normal kernels, small shifts and means,
    moving variances near 1."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in variables(classes).items():
        if name.endswith("weights"):
            fan_in = int(np.prod(shape[:3]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.1
        values[name] = value.astype(np.float32)
    return values


def write(prefix: Path, values: dict[str, object]) -> Path:
    """A checkpoint as TF1's ``Saver`` writes it (``SaveV2``: PREFIX.index and
    PREFIX.data-00000-of-00001) under the given names."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    names = list(values)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=[values[n] for n in names]
    )
    return prefix


def same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow's SAME: ceil(size / stride) outputs, the odd padded cell after."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total - total // 2]


def forward(values: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of inception_v1 (inference) for NCHW ``x`` already in [-1, 1], in plain
    PyTorch functional ops from the facts above."""
    import torch
    import torch.nn.functional as F

    v = {k: torch.from_numpy(np.asarray(a, np.float64)) for k, a in values.items()}

    def pad(t, kernel, stride, value=0.0):
        h, w = t.shape[-2:]
        return F.pad(t, same_pads(w, kernel, stride) + same_pads(h, kernel, stride), value=value)

    def conv(t, scope, stride=1):
        w = v[f"{scope}/weights"].permute(3, 2, 0, 1)  # HWIO -> OIHW
        t = F.conv2d(pad(t, w.shape[-1], stride), w, stride=stride)
        mean, var, beta = (
            v[f"{scope}/BatchNorm/{n}"][None, :, None, None] for n in ("moving_mean", "moving_variance", "beta")
        )
        return torch.relu((t - mean) / torch.sqrt(var + EPS) + beta)

    def max_pool(t, kernel, stride):
        return F.max_pool2d(pad(t, kernel, stride, -float("inf")), kernel, stride)

    t = torch.from_numpy(np.asarray(x, np.float64))
    t = conv(t, f"{SCOPE}/Conv2d_1a_7x7", stride=2)
    t = max_pool(t, 3, 2)
    t = conv(t, f"{SCOPE}/Conv2d_2b_1x1")
    t = conv(t, f"{SCOPE}/Conv2d_2c_3x3")
    for block, *_ in MIXED:
        if block in POOL_BEFORE:
            t = max_pool(t, *POOL_BEFORE[block])
        s = f"{SCOPE}/{block}"
        b0 = conv(t, f"{s}/Branch_0/Conv2d_0a_1x1")
        b1 = conv(conv(t, f"{s}/Branch_1/Conv2d_0a_1x1"), f"{s}/Branch_1/Conv2d_0b_3x3")
        b2 = conv(conv(t, f"{s}/Branch_2/Conv2d_0a_1x1"), f"{s}/Branch_2/{branch2_second(block)}")
        b3 = conv(max_pool(t, 3, 1), f"{s}/Branch_3/Conv2d_0b_1x1")
        t = torch.cat([b0, b1, b2, b3], 1)
    t = F.avg_pool2d(t, 7, 1)  # VALID: a 7 x 7 map becomes 1 x 1
    w = v[f"{SCOPE}/Logits/Conv2d_0c_1x1/weights"].permute(3, 2, 0, 1)
    logits = F.conv2d(t, w, v[f"{SCOPE}/Logits/Conv2d_0c_1x1/biases"])
    return logits[:, :, 0, 0].numpy()


# --------------------------------------------------------------------------------------
# A checkpoint index written by hand: it may declare what no data file holds
# --------------------------------------------------------------------------------------

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # CRC-32C (Castagnoli), reflected
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF  # LevelDB's mask


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A LevelDB table block (no prefix sharing, one restart point), with its trailer."""
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # restart offsets [0], count 1
    trailer = b"\x00"  # no compression
    return body + trailer + _masked(crc32c(body + trailer)).to_bytes(4, "little")


ITEMSIZE = {"DT_FLOAT": 4, "DT_DOUBLE": 8, "DT_HALF": 2, "DT_INT32": 4, "DT_INT64": 8}


def write_index(prefix: Path, declared: dict[str, tuple[tuple[int, ...], str]], data: bytes = b"") -> Path:
    """PREFIX.index declaring ``declared`` (name -> (shape, dtype name)) and a data shard
    of ``data``: an index as TensorFlow's ``BundleWriter`` lays it out (a table of
    ``BundleHeaderProto`` under "" and a ``BundleEntryProto`` per name), whose entries
    point at bytes the shard need not hold."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import tensor_bundle_pb2

    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=1)
    header.version.producer = 1
    entries = [(b"", header.SerializeToString())]
    offset = 0
    for name in sorted(declared):
        shape, dtype = declared[name]
        entry = tensor_bundle_pb2.BundleEntryProto(dtype=types_pb2.DataType.Value(dtype), shard_id=0, offset=offset)
        for d in shape:
            entry.shape.dim.add(size=d)
        entry.size = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dtype]
        offset += entry.size
        entries.append((name.encode(), entry.SerializeToString()))
    data_block = _block(entries)
    meta_block = _block([])
    handle = lambda offset, size: _varint(offset) + _varint(size)  # noqa: E731 - a BlockHandle
    index_block = _block([(entries[-1][0] + b"\x00", handle(0, len(data_block) - 5))])
    meta_at, index_at = len(data_block), len(data_block) + len(meta_block)
    handles = handle(meta_at, len(meta_block) - 5) + handle(index_at, len(index_block) - 5)
    footer = handles.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    prefix.with_name(prefix.name + ".index").write_bytes(data_block + meta_block + index_block + footer)
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(data)
    return prefix
