"""An ONNX file's counts, read from its protobuf wire format before protobuf parses it.

A parsed message costs far more memory than its bytes: an empty ``NodeProto`` is two
bytes on the wire (``0a 00``) and a hundred and more once parsed, so a 20 MB file of
empty nodes parses into gigabytes although its size is within what the variant needs.
This walk follows the messages of ``onnx.proto`` that can repeat without bound (graphs,
nodes, attributes, tensors, value infos and their types), counting nodes, initializers
and every field (each varint of a packed integer list is one), and stops at the first
count past its bound: the bounds are multiples of what the network's own graph holds
(``Bounds``), so no honest export comes near them. Byte strings (``raw_data``, names) are
skipped by their length, never copied.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reading import Damaged

# Message types by name: field number -> the message type it holds (other fields are
# scalars or opaque bytes). Numbers from onnx/onnx.proto3 (IR version 10).
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 8: "pair", 14: "pair", 20: "training", 25: "function"},
    "graph": {
        1: "node",
        5: "tensor",
        15: "sparse",
        11: "value",
        12: "value",
        13: "value",
        14: "annotation",
        16: "pair",
    },
    "node": {5: "attribute", 9: "pair"},
    "attribute": {
        5: "tensor",
        6: "graph",
        10: "tensor",
        11: "graph",
        14: "type",
        15: "type",
        22: "sparse",
        23: "sparse",
    },
    "tensor": {12: "pair", 13: "pair", 16: "pair"},
    "sparse": {1: "tensor", 2: "tensor"},
    "value": {2: "type", 3: "pair"},
    "type": {1: "tensor_type", 4: "one_type", 5: "map_type", 8: "tensor_type", 9: "one_type"},
    "tensor_type": {2: "shape"},
    "one_type": {1: "type"},
    "map_type": {2: "type"},
    "shape": {1: "dimension"},
    "dimension": {},
    "function": {6: "attribute", 7: "node", 9: "pair", 10: "value", 11: "value"},
    "training": {1: "graph", 2: "graph", 3: "pair", 4: "pair"},
    "annotation": {2: "pair"},
    "pair": {},
}
# Packed lists of varints (each element a 64-bit integer once parsed, from one byte):
# TensorProto dims, int32_data, int64_data, uint64_data; AttributeProto ints.
_PACKED_VARINTS: dict[str, set[int]] = {"tensor": {1, 5, 7, 11}, "attribute": {8}}
_CHUNK = 1 << 20  # bytes of a packed list counted at a time
MAX_DEPTH = 32  # messages within messages (a graph in an attribute of a node of a graph ...)


@dataclass(frozen=True)
class Bounds:
    nodes: int  # nodes in all graphs and functions
    initializers: int  # tensors in initializer lists
    fields: int  # every field occurrence, and every varint of a packed list


@dataclass
class Counts:
    nodes: int = 0
    initializers: int = 0
    fields: int = 0


class _Walk:
    def __init__(self, data: memoryview, limit: Bounds) -> None:
        self.data, self.limit, self.counts = data, limit, Counts()

    def varint(self, at: int, end: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            if at >= end or shift > 63:
                raise Damaged(f"a varint at byte {at:,} runs past its message (truncated or corrupt)")
            byte = self.data[at]
            value |= (byte & 0x7F) << shift
            at += 1
            if not byte & 0x80:
                return value, at
            shift += 7

    def count(self, what: str, amount: int = 1) -> None:
        c, limit = self.counts, self.limit
        if what == "node":
            c.nodes += amount
            if c.nodes > limit.nodes:
                raise Damaged(f"its graphs hold more than {limit.nodes:,} nodes; this network's graph needs far fewer")
        elif what == "initializer":
            c.initializers += amount
            if c.initializers > limit.initializers:
                raise Damaged(f"its graph holds more than {limit.initializers:,} initializers; this network has fewer")
        c.fields += amount if what == "field" else 0
        if c.fields > limit.fields:
            raise Damaged(
                f"it holds more than {limit.fields:,} protobuf fields; this network's graph needs far fewer "
                f"(parsing that many would take gigabytes)"
            )

    def message(self, kind: str, at: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Damaged(f"its messages nest more than {MAX_DEPTH} deep")
        children, packed = _SCHEMA[kind], _PACKED_VARINTS.get(kind, set())
        while at < end:
            key, at = self.varint(at, end)
            number, wire = key >> 3, key & 7
            self.count("field")
            if wire == 0:
                _, at = self.varint(at, end)
            elif wire == 1:
                at += 8
            elif wire == 5:
                at += 4
            elif wire == 2:
                length, at = self.varint(at, end)
                if length > end - at:
                    raise Damaged(
                        f"a field at byte {at:,} declares {length:,} bytes; its message has {end - at:,} left "
                        f"(truncated or corrupt)"
                    )
                child = children.get(number)
                if child is not None:
                    if (kind == "graph" and number == 1) or (kind == "function" and number == 7):
                        self.count("node")
                    if kind == "graph" and number in (5, 15):
                        self.count("initializer")
                    self.message(child, at, at + length, depth + 1)
                elif number in packed:
                    for start in range(at, at + length, _CHUNK):  # a varint ends at each byte below 0x80
                        chunk = np.frombuffer(self.data[start : min(start + _CHUNK, at + length)], np.uint8)
                        self.count("field", int(np.count_nonzero(chunk < 0x80)))
                at += length
            else:
                raise Damaged(f"wire type {wire} at byte {at:,} is not one ONNX uses (corrupt)")
            if at > end:
                raise Damaged(f"a field runs past the end of its message at byte {end:,} (truncated or corrupt)")


def check(path: Path, limit: Bounds) -> Counts:
    """Walk the ModelProto in ``path`` (mapped, not read) within ``limit``; the counts."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            walk = _Walk(view, limit)
            walk.message("model", 0, len(view), 0)
            return walk.counts
        finally:
            view.release()
