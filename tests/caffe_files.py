"""Caffe ``.caffemodel`` files made by the tests (the published bvlc_googlenet.caffemodel
cannot be downloaded here), with the suite's schema (``conformance/formats/caffe_pb2``),
as Caffe writes them: every layer of bvlc_googlenet in forward order, the parameter-free
ones too, each weight layer with its blobs (0: weights, 1: bias).

The layer names are written out here from Caffe's models/bvlc_googlenet/deploy.prototxt
(https://github.com/BVLC/caffe/tree/master/models/bvlc_googlenet), not derived from the
suite's naming scheme, so that the scheme is tested against them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conformance.formats import caffe_pb2

BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
BRANCHES = {  # Caffe's name in a block -> the canonical unit in inception<block>
    "1x1": "branch1",
    "3x3_reduce": "branch2.0",
    "3x3": "branch2.1",
    "5x5_reduce": "branch3.0",
    "5x5": "branch3.1",
    "pool_proj": "branch4.1",
}


def _block(b: str) -> list[tuple[str, str, str | None]]:
    """An Inception block's layers: (name, type, canonical unit of its weights or None)."""
    out: list[tuple[str, str, str | None]] = []
    for caffe, unit in BRANCHES.items():
        if caffe == "pool_proj":
            out.append((f"inception_{b}/pool", "Pooling", None))
        out.append((f"inception_{b}/{caffe}", "Convolution", f"inception{b}.{unit}"))
        out.append((f"inception_{b}/relu_{caffe}", "ReLU", None))
    out.append((f"inception_{b}/output", "Concat", None))
    return out


def _aux(i: int) -> list[tuple[str, str, str | None]]:
    return [
        (f"loss{i}/ave_pool", "Pooling", None),
        (f"loss{i}/conv", "Convolution", f"aux{i}.conv"),
        (f"loss{i}/relu_conv", "ReLU", None),
        (f"loss{i}/fc", "InnerProduct", f"aux{i}.fc1"),
        (f"loss{i}/relu_fc", "ReLU", None),
        (f"loss{i}/drop_fc", "Dropout", None),
        (f"loss{i}/classifier", "InnerProduct", f"aux{i}.fc2"),
        (f"loss{i}/loss", "SoftmaxWithLoss", None),
    ]


def bvlc_layers(aux: bool = True) -> list[tuple[str, str, str | None]]:
    """bvlc_googlenet's layers in train_val.prototxt's order (the aux heads where they tap)."""
    layers: list[tuple[str, str, str | None]] = [
        ("data", "Data", None),
        ("conv1/7x7_s2", "Convolution", "conv1"),
        ("conv1/relu_7x7", "ReLU", None),
        ("pool1/3x3_s2", "Pooling", None),
        ("pool1/norm1", "LRN", None),
        ("conv2/3x3_reduce", "Convolution", "conv2"),
        ("conv2/relu_3x3_reduce", "ReLU", None),
        ("conv2/3x3", "Convolution", "conv3"),
        ("conv2/relu_3x3", "ReLU", None),
        ("conv2/norm2", "LRN", None),
        ("pool2/3x3_s2", "Pooling", None),
    ]
    for b in BLOCKS:
        layers += _block(b)
        if b in ("3b", "4e"):
            layers.append((f"pool{3 if b == '3b' else 4}/3x3_s2", "Pooling", None))
        if aux and b in ("4a", "4d"):
            layers += _aux(1 if b == "4a" else 2)
    return [
        *layers,
        ("pool5/7x7_s1", "Pooling", None),
        ("pool5/drop_7x7_s1", "Dropout", None),
        ("loss3/classifier", "InnerProduct", "fc"),
        ("loss3/loss3", "SoftmaxWithLoss", None),
    ]


# Caffe's V1 layer types (V1LayerParameter.LayerType) for the current format's type names
V1_TYPES = {
    "Data": "DATA",
    "Convolution": "CONVOLUTION",
    "ReLU": "RELU",
    "Pooling": "POOLING",
    "LRN": "LRN",
    "Concat": "CONCAT",
    "InnerProduct": "INNER_PRODUCT",
    "Dropout": "DROPOUT",
    "SoftmaxWithLoss": "SOFTMAX_LOSS",
}


def _weights(unit: str, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    prefix = f"{unit}.conv" if f"{unit}.conv.weight" in params else unit
    return [params[f"{prefix}.weight"], params[f"{prefix}.bias"]]


def _fill(blob: caffe_pb2.BlobProto, value: np.ndarray, legacy: bool, double: bool) -> None:
    if legacy:  # num, channels, height, width: leading ones for a matrix or a vector
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - value.ndim) + value.shape
    else:
        blob.shape.dim.extend(value.shape)
    (blob.double_data if double else blob.data).extend(value.ravel().tolist())


def net(
    params: dict[str, np.ndarray], v1: bool, legacy: bool | None = None, double: bool = False
) -> caffe_pb2.NetParameter:
    """bvlc_googlenet holding canonical ``params`` (aux heads if they hold them): ``v1``
    the V1 ``layers`` format (legacy 4-D blob shapes, as Caffe wrote in 2014), else the
    current ``layer`` format (``shape``); ``legacy`` overrides the shapes' form;
    ``double`` stores float64 values."""
    legacy = v1 if legacy is None else legacy
    out = caffe_pb2.NetParameter(name="GoogleNet")
    for name, kind, unit in bvlc_layers(aux="aux1.fc1.weight" in params):
        if v1:
            layer = out.layers.add(name=name, type=caffe_pb2.V1LayerParameter.LayerType.Value(V1_TYPES[kind]))
        else:
            layer = out.layer.add(name=name, type=kind)
        for value in _weights(unit, params) if unit else []:
            _fill(layer.blobs.add(), value, legacy, double)
    return out


def write(path: Path, params: dict[str, np.ndarray], v1: bool, **options) -> Path:
    path.write_bytes(net(params, v1, **options).SerializeToString())
    return path
