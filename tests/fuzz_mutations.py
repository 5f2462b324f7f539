"""The fuzzer's mutations (``tests/test_fuzz.py``): (valid bytes, rng) -> mutated bytes,
the same for every format (truncated, bytes flipped) or made for one (a declared size
inflated, a dtype changed, an entry added or removed), each format's file edited as its
own tools would edit it."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import helpers

Mutation = Callable[[bytes, np.random.Generator], bytes]
BIG = (1 << 20, 1 << 31, 1 << 40, 50_000, 3)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def flip(data: bytes, rng: np.random.Generator) -> bytes:
    count = int(rng.integers(1, 9))
    return helpers.flip(data, [(int(rng.integers(0, len(data))), int(rng.integers(1, 256))) for _ in range(count)])


def _key(rng: np.random.Generator, keys) -> str:
    keys = sorted(keys)
    return keys[int(rng.integers(0, len(keys)))]


def _dtype(rng: np.random.Generator) -> str:
    return ["int32", "float16", "float64", "bool", "complex64", ">f4", "uint8", "int64"][int(rng.integers(0, 8))]


# safetensors: a header edited in place, or the file rebuilt


def _st_split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _st_join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def st_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    header, body = _st_split(data)
    key = _key(rng, [k for k in header if k != "__metadata__"])
    header[key]["shape"][0] *= int(rng.choice(BIG))
    if rng.random() < 0.5:  # keep the offsets consistent: the file grows (sparse on disk here)
        n = int(np.prod(header[key]["shape"])) * 4
        header[key]["data_offsets"][1] = header[key]["data_offsets"][0] + n
    return _st_join(header, body)


def st_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    header, body = _st_split(data)
    key = _key(rng, [k for k in header if k != "__metadata__"])
    header[key]["dtype"] = ["I32", "F16", "F64", "BF16", "U8", "BOOL", "F8_E4M3", "X9"][int(rng.integers(0, 8))]
    return _st_join(header, body)


def _st_arrays(data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return dict(load(data))


def _st_save(arrays: dict[str, np.ndarray], data: bytes, rng: np.random.Generator) -> bytes:
    from safetensors.numpy import save

    keep = rng.random() < 0.5  # with the suite's digest (now wrong) or as a foreign file
    metadata = _st_split(data)[0].get("__metadata__") if keep else None
    return bytes(save(arrays, metadata=metadata))


def st_extra(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _st_arrays(data)
    arrays[["extra.weight", "fc.weight_orig", "aux1.fc2.bias"][int(rng.integers(0, 3))]] = np.zeros(7, np.float32)
    return _st_save(arrays, data, rng)


def st_missing(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _st_arrays(data)
    del arrays[_key(rng, arrays)]
    return _st_save(arrays, data, rng)


# npz: arrays rewritten with numpy; a header edited to declare more


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _npz_arrays(data)
    key = _key(rng, arrays)
    member = io.BytesIO()
    np.save(member, arrays.pop(key))
    raw = member.getvalue()
    shape = f"({int(rng.choice(BIG))}, "
    raw = raw.replace(b"(", shape.encode(), 1)  # the header's shape, padded by numpy with spaces
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(f"{k}.npy", b.getvalue())
        z.writestr(f"{key}.npy", raw)
    return buffer.getvalue()


def npz_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _npz_arrays(data)
    key = _key(rng, arrays)
    arrays[key] = arrays[key].astype(_dtype(rng))
    return _npz(arrays)


def npz_extra(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _npz_arrays(data)
    arrays["extra.weight"] = np.ones((3, 3), np.float32)
    return _npz(arrays)


def npz_missing(data: bytes, rng: np.random.Generator) -> bytes:
    arrays = _npz_arrays(data)
    del arrays[_key(rng, arrays)]
    return _npz(arrays)


# torch: the state_dict loaded, changed, saved again


def _torch_edit(data: bytes, edit) -> bytes:
    import torch

    state = dict(torch.load(io.BytesIO(data), weights_only=True))
    edit(state, torch)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def pth_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    n = min(int(rng.choice(BIG)), 1 << 31)  # n x n must still count in int64

    def edit(state, torch):
        key = _key(rng, [k for k in state if not k.endswith("num_batches_tracked")])
        state[key] = torch.zeros(1).expand(n, n) if rng.random() < 0.5 else torch.zeros(1).as_strided((n, 7), (0, 0))

    return _torch_edit(data, edit)


def pth_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(state, torch):
        key = _key(rng, [k for k in state if not k.endswith("num_batches_tracked")])
        kind = int(rng.integers(0, 6))
        value = state[key]
        state[key] = [
            lambda: value.to(torch.int32),
            lambda: value.to(torch.bfloat16),
            lambda: value.to(torch.complex64),
            lambda: value.to(torch.bool),
            lambda: value.to_sparse(),
            lambda: value.to(torch.float16),
        ][kind]()

    return _torch_edit(data, edit)


def pth_extra(data: bytes, rng: np.random.Generator) -> bytes:
    return _torch_edit(data, lambda state, torch: state.__setitem__("extra.weight", torch.ones(4)))


def pth_missing(data: bytes, rng: np.random.Generator) -> bytes:
    return _torch_edit(data, lambda state, torch: state.pop(_key(rng, state)))


# Keras weights: datasets edited with h5py (the suite's digest removed half the time)


def _h5_edit(data: bytes, edit, rng: np.random.Generator) -> bytes:
    import h5py

    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        if rng.random() < 0.5 and "conformance_sha256" in f.attrs:
            del f.attrs["conformance_sha256"]
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        edit(f, _key(rng, names))
    return buffer.getvalue()


def h5_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(f, name):
        shape = f[name].shape
        del f[name]
        f.create_dataset(name, shape=(int(rng.choice(BIG)), *shape[1:]), dtype="f4")

    return _h5_edit(data, edit, rng)


def h5_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    dtype = _dtype(rng)

    def edit(f, name):
        value = f[name][()]
        del f[name]
        f[name] = value.astype(dtype)

    return _h5_edit(data, edit, rng)


def h5_extra(data: bytes, rng: np.random.Generator) -> bytes:
    return _h5_edit(data, lambda f, name: f.create_dataset("extra/vars/0", data=np.ones(5, np.float32)), rng)


def h5_missing(data: bytes, rng: np.random.Generator) -> bytes:
    return _h5_edit(data, lambda f, name: f.__delitem__(name), rng)


# Keras models: the inner weights file or the config changed, the archive rebuilt


def _keras_edit(data: bytes, config=None, weights=None, drop: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == drop:
                continue
            if info.filename == "config.json" and config is not None:
                doc = json.loads(body)
                config(doc["config"])
                body = json.dumps(doc).encode()
            if info.filename == "model.weights.h5" and weights is not None:
                body = weights(body)
            dst.writestr(info, body)
    return out.getvalue()


def keras_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.5:
        classes = [int(rng.choice(BIG)), 0, -3, "many", 2.5][int(rng.integers(0, 5))]
        return _keras_edit(data, config=lambda c: c.__setitem__("num_classes", classes))
    return _keras_edit(data, weights=lambda b: h5_inflate(b, rng))


def keras_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    return _keras_edit(data, weights=lambda b: h5_dtype(b, rng))


def keras_extra(data: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.5:
        return _keras_edit(data, config=lambda c: c.__setitem__("aux_logits", True))
    return _keras_edit(data, weights=lambda b: h5_extra(b, rng))


def keras_missing(data: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.3:
        return _keras_edit(data, drop=["config.json", "metadata.json"][int(rng.integers(0, 2))])
    return _keras_edit(data, weights=lambda b: h5_missing(b, rng))


# MXNet: arrays saved again with mxnet, or the first array's header edited in place

_FIRST_DIM = 24 + 4 + 4 + 4  # list header (magic, reserved, count), NDArray magic, storage type, ndim
_FIRST_TYPE = _FIRST_DIM + 8 * 4 + 8  # 4 dims (inception_mnist's first array: conv1.weight), context


def _mx_edit(data: bytes, edit) -> bytes:
    import tempfile

    import mxnet as mx

    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "x.params")
        Path(path).write_bytes(data)
        arrays = mx.nd.load(path)
        edit(arrays, mx)
        mx.nd.save(path, arrays)
        return Path(path).read_bytes()


def params_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    out[_FIRST_DIM : _FIRST_DIM + 8] = struct.pack("<q", int(rng.choice(BIG)))
    return bytes(out)


def params_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.5:  # the type flag alone: int32 has float32's size, float16 not
        out = bytearray(data)
        out[_FIRST_TYPE : _FIRST_TYPE + 4] = struct.pack("<i", int(rng.choice([4, 2, 12, 99, 7])))
        return bytes(out)
    dtype = ["int32", "float16", "float64", "uint8", "int8"][int(rng.integers(0, 5))]

    def edit(arrays, mx):
        key = _key(rng, arrays)
        arrays[key] = arrays[key].astype(dtype)

    return _mx_edit(data, edit)


def params_extra(data: bytes, rng: np.random.Generator) -> bytes:
    return _mx_edit(data, lambda arrays, mx: arrays.__setitem__("extra.weight", mx.nd.ones((2, 2))))


def params_missing(data: bytes, rng: np.random.Generator) -> bytes:
    return _mx_edit(data, lambda arrays, mx: arrays.pop(_key(rng, arrays)))


# Caffe: the NetParameter parsed with the suite's schema, a layer or blob changed, serialized again


def _caffe_edit(data: bytes, edit) -> bytes:
    from conformance.formats import caffe_pb2

    net = caffe_pb2.NetParameter.FromString(data)
    edit(net, net.layers if len(net.layers) else net.layer)
    return net.SerializeToString()


def _weighted(layers, rng: np.random.Generator):
    with_blobs = [layer for layer in layers if len(layer.blobs)]
    return with_blobs[int(rng.integers(0, len(with_blobs)))]


def caffe_inflate(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(net, layers):
        blob = _weighted(layers, rng).blobs[int(rng.integers(0, 2))]
        big = int(rng.choice(BIG))
        if blob.HasField("num"):  # V1's legacy shape, an int32
            blob.height = min(blob.height * big, (1 << 31) - 1)
        else:
            blob.shape.dim[0] *= big

    return _caffe_edit(data, edit)


def caffe_dtype(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(net, layers):
        blob = _weighted(layers, rng).blobs[0]
        kind = int(rng.integers(0, 3))
        if kind < 2:  # float64 values (converted), or both kinds at once (refused)
            blob.double_data.extend(blob.data)
        if kind == 0:
            blob.ClearField("data")
        if kind == 2:  # no values at all
            blob.ClearField("data")

    return _caffe_edit(data, edit)


def caffe_extra(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(net, layers):
        layer = layers.add(name=["extra/fc", "loss4/classifier", "inception_5c/1x1"][int(rng.integers(0, 3))])
        layer.blobs.add().data.extend([1.0] * 7)

    return _caffe_edit(data, edit)


def caffe_missing(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(net, layers):
        layer = _weighted(layers, rng)
        if rng.random() < 0.5:
            layers.remove(layer)
        else:
            del layer.blobs[1]

    return _caffe_edit(data, edit)


SPECIFIC: dict[str, dict[str, Mutation]] = {
    "safetensors": {"inflate": st_inflate, "dtype": st_dtype, "extra": st_extra, "missing": st_missing},
    "npz": {"inflate": npz_inflate, "dtype": npz_dtype, "extra": npz_extra, "missing": npz_missing},
    "torch": {"inflate": pth_inflate, "dtype": pth_dtype, "extra": pth_extra, "missing": pth_missing},
    "keras-weights": {"inflate": h5_inflate, "dtype": h5_dtype, "extra": h5_extra, "missing": h5_missing},
    "keras": {"inflate": keras_inflate, "dtype": keras_dtype, "extra": keras_extra, "missing": keras_missing},
    "mxnet": {"inflate": params_inflate, "dtype": params_dtype, "extra": params_extra, "missing": params_missing},
    "caffe": {"inflate": caffe_inflate, "dtype": caffe_dtype, "extra": caffe_extra, "missing": caffe_missing},
}


def mutate(fmt: str, kind: str, data: bytes, rng: np.random.Generator) -> bytes:
    if kind == "truncate":
        return truncate(data, rng)
    if kind == "flip":
        return flip(data, rng)
    return SPECIFIC[fmt][kind](data, rng)
