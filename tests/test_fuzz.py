"""Seeded fuzzing of ``port``: valid checkpoints of every format, mutated (truncated,
bytes flipped, declared sizes inflated, dtypes changed, entries added or removed), each
ported. Every run ends with a verified output or one PortError (the CLI's exit 2 with
one message): never another exception (a traceback), a VerificationError (a reader that
let a broken file through), or more than 1 GB of memory.

In CI every (format, mutation) pair runs once in-process and a few random cases run as
command-line subprocesses. For a longer run: ``FUZZ_CASES=500 FUZZ_SEED=1 pytest
tests/test_fuzz.py -s`` (cases drawn at random; ``FUZZ_CLI`` subprocess cases).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import struct
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, frameworks, spec
from conformance.formats.port import PortError, port
from conformance.formats.registry import FORMATS

from . import caffe_files, hostile
from .conftest import installed

VARIANT = "inception_mnist"
SEED = int(os.environ.get("FUZZ_SEED", "0"))
SUFFIX = {
    "safetensors": ".safetensors",
    "npz": ".npz",
    "torch": ".pth",
    "keras-weights": ".weights.h5",
    "keras": ".keras",
    "mxnet": ".params",
    "caffe": ".caffemodel",
}
FORMAT_VARIANT = {"caffe": "googlenet_lrn"}  # a .caffemodel holds Caffe's network; the others the small one
MUTATIONS = ("truncate", "flip", "inflate", "dtype", "extra", "missing")
TARGETS = ("npz", "safetensors", "mxnet", "torch")
PEAK_GROWTH_MB = 1000


def variant_of(fmt: str) -> str:
    return FORMAT_VARIANT.get(fmt, VARIANT)


def plan(fmt: str = "") -> spec.Plan:
    return spec.resolve(variant_of(fmt), aux_logits=fmt in FORMAT_VARIANT)


def available() -> list[str]:
    have = set(installed())
    protobuf = importlib.util.find_spec("google.protobuf") is not None
    return [f for f in SUFFIX if FORMATS[f].framework in (None, *have) and (f != "caffe" or protobuf)]


# --------------------------------------------------------------------------------------
# Mutations: (valid bytes, rng) -> mutated bytes
# --------------------------------------------------------------------------------------

Mutation = Callable[[bytes, np.random.Generator], bytes]
BIG = (1 << 20, 1 << 31, 1 << 40, 50_000, 3)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def flip(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(0, len(out)))] ^= int(rng.integers(1, 256))
    return bytes(out)


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


# Structural mutations (issue 24): each makes a file no reader may accept, and each once
# ended in a traceback or gigabytes. Drawn per format like the others, always refused.


def zip_version(data: bytes, rng: np.random.Generator) -> bytes:
    record = int(rng.integers(0, data.count(hostile.CENTRAL)))
    return hostile.zip_version_needed(data, record, int(rng.integers(0x40, 0x100)))


def _cycle_name(rng: np.random.Generator) -> str:
    return "L" * int(rng.choice([1, 100, 10_000]))


def h5_cycle(data: bytes, rng: np.random.Generator) -> bytes:
    return hostile.h5_linked_to_root(data, _cycle_name(rng))


def keras_cycle(data: bytes, rng: np.random.Generator) -> bytes:
    name = _cycle_name(rng)
    return hostile.keras_member_edited(data, "model.weights.h5", lambda h5: hostile.h5_linked_to_root(h5, name))


def onnx_nodes(data: bytes, rng: np.random.Generator) -> bytes:
    """More empty nodes than the bound (16 per budgeted tensor: 1,888 for inception_mnist),
    within the file size the variant admits, so the count, not the size, refuses it."""
    return hostile.onnx_empty_nodes(int(rng.integers(2_000, 1_000_000)), data)


def onnx_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    import onnx

    names = sorted(i.name for i in onnx.load_from_string(data).graph.initializer if i.data_type == 1)
    return hostile.onnx_duplicate_initializer(data, names[int(rng.integers(0, len(names)))])


# What the refusal of each structural mutation says: refused for its own reason, not by
# an earlier check it happens to trip.
STRUCTURAL_REASON = {
    "zip-version": "zip file version",
    "h5-cycle": "second link to an object|path is 10,00",
    "nodes": "nodes; this network's graph needs far fewer",
    "duplicate": "two initializers are named",
}
STRUCTURAL: dict[str, dict[str, Mutation]] = {
    "npz": {"zip-version": zip_version},
    "torch": {"zip-version": zip_version},
    "keras": {"zip-version": zip_version, "h5-cycle": keras_cycle},
    "keras-weights": {"h5-cycle": h5_cycle},
    "onnx": {"nodes": onnx_nodes, "duplicate": onnx_duplicate},
}


def mutate(fmt: str, kind: str, data: bytes, rng: np.random.Generator) -> bytes:
    if kind == "truncate":
        return truncate(data, rng)
    if kind == "flip":
        return flip(data, rng)
    return SPECIFIC[fmt][kind](data, rng)


# --------------------------------------------------------------------------------------
# Running the cases
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """A valid inception_mnist file of every available format, written as each
    framework's users write it (safetensors by the suite, a googlenet_lrn .caffemodel as
    Caffe 2014 wrote bvlc_googlenet's, by the tests' schema)."""
    p = plan()
    params = canonical.random_params(p, SEED)
    d = tmp_path_factory.mktemp("originals")
    backends = installed()
    writers: dict[str, Callable[[Path], object]] = {
        "safetensors": lambda path: canonical.save(params, path, p),
        "npz": lambda path: np.savez(path, **params),
    }

    def native(name: str, save: Callable[[object, Path], object]) -> Callable[[Path], object]:
        def write(path: Path) -> None:
            model = backends[name].build(VARIANT)
            backends[name].from_canonical(model, params)
            save(model, path)

        return write

    if "torch" in backends:
        import torch

        writers["torch"] = native("torch", lambda m, path: torch.save(m.state_dict(), path))
    if "keras" in backends:
        writers["keras-weights"] = native("keras", lambda m, path: m.save_weights(str(path)))
        writers["keras"] = native("keras", lambda m, path: m.save(str(path)))
    if "mxnet" in backends:
        writers["mxnet"] = native("mxnet", lambda m, path: m.save_parameters(str(path)))
    writers["caffe"] = lambda path: caffe_files.write(path, canonical.random_params(plan("caffe"), SEED), v1=True)
    out = {}
    for fmt in available():
        path = d / f"original{SUFFIX[fmt]}"
        writers[fmt](path)
        out[fmt] = path.read_bytes()
    return out


def peak_growth_mb(run: Callable[[], object]) -> float | None:
    """Peak resident memory above the start, while ``run`` runs (Linux: /proc's peak is
    reset first); None where it cannot be measured."""
    status = Path("/proc/self/status")

    def field(name: str) -> float:
        line = next(line for line in status.read_text().splitlines() if line.startswith(name))
        return int(line.split()[1]) / 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        run()
        return None
    before = field("VmRSS:")
    run()
    return field("VmHWM:") - before


def cases(count: int, rng: np.random.Generator, formats: list[str]) -> list[tuple[str, str]]:
    every = [(f, m) for f in formats for m in MUTATIONS]
    if count <= len(every):
        return every[:count]
    return every + [every[int(i)] for i in rng.integers(0, len(every), count - len(every))]


def outcome(src: Path, dst: Path, variant: str) -> str:
    """ "pass" (verified), "refused" (one PortError line) or what went wrong."""
    try:
        result = port(src, dst, variant)
    except PortError as e:
        message = str(e)
        if not message or "\n" in message:
            return f"PortError of {message.count(chr(10)) + 1} lines: {message[:300]!r}"
        return "refused"
    except Exception:  # noqa: BLE001 - what the fuzzing looks for: any other exception is a bug
        return "EXCEPTION " + traceback.format_exc()[-1500:]
    return "pass" if result.passed and dst.exists() else f"port returned unverified: {result}"


def test_mutated_checkpoints_are_ported_or_refused_in_one_message(originals, tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    have = installed()
    targets = [t for t in TARGETS if FORMATS[t].framework in (None, *have)]
    count = int(os.environ.get("FUZZ_CASES", len(originals) * len(MUTATIONS)))
    tally: Counter = Counter()
    failures = []
    for i, (fmt, kind) in enumerate(cases(count, rng, list(originals))):
        src = tmp_path / f"case{i}{SUFFIX[fmt]}"
        src.write_bytes(mutate(fmt, kind, originals[fmt], rng))
        dst = tmp_path / f"out{i}{SUFFIX[targets[i % len(targets)]]}"
        got: list[str] = []
        variant = variant_of(fmt)
        grown = peak_growth_mb(lambda src=src, dst=dst, got=got, v=variant: got.append(outcome(src, dst, v)))
        result = got[0]
        tally[(fmt, kind, result if result in ("pass", "refused") else "FAILED")] += 1
        if result not in ("pass", "refused") or (grown is not None and grown > PEAK_GROWTH_MB):
            failures.append(f"case {i} ({fmt}, {kind}, seed {SEED}): {result}; peak growth {grown} MB")
        leftover = [p.name for p in tmp_path.iterdir() if ".conformance-tmp" in p.name]
        assert not leftover, (i, fmt, kind, leftover)
        src.unlink()
        dst.unlink(missing_ok=True)
    with capsys.disabled():
        print(f"\nfuzz: {sum(tally.values())} cases, seed {SEED}")
        for (fmt, kind, result), n in sorted(tally.items()):
            print(f"  {fmt:<14} {kind:<9} {result:<8} {n}")
    assert not failures, "\n\n".join(failures[:5])


def test_mutated_checkpoints_on_the_command_line(originals, tmp_path, capsys):
    """A few random cases as users run them: exit 0 or 2, one message, no traceback,
    under 1 GB peak memory (of the whole process, imports included)."""
    rng = np.random.default_rng(SEED + 1)
    count = int(os.environ.get("FUZZ_CLI", "3"))
    for i in range(count):
        fmt = list(originals)[int(rng.integers(0, len(originals)))]
        kind = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
        src = tmp_path / f"cli{i}{SUFFIX[fmt]}"
        src.write_bytes(mutate(fmt, kind, originals[fmt], rng))
        m = hostile.run_measured(
            hostile.cli("port", str(src), str(tmp_path / f"cli{i}.npz"), "--variant", variant_of(fmt))
        )
        with capsys.disabled():
            print(f"\nfuzz cli {fmt} {kind}: exit {m.returncode}, peak {m.peak_mb:.0f} MB, {m.seconds:.1f} s")
        assert m.returncode in (0, 2), (fmt, kind, m.returncode, m.stderr[-3000:])
        assert "Traceback" not in m.stderr, (fmt, kind, m.stderr[-3000:])
        if m.returncode == 2:
            assert m.stderr.count("error:") == 1, m.stderr
        else:
            assert m.stdout.strip().endswith("PASS")
        assert m.peak_mb < 1000, (fmt, kind, m.peak_mb)


@pytest.fixture(scope="module")
def structural_originals(originals) -> dict[str, bytes]:
    """The originals the structural mutations edit, with an ONNX file of the network
    where onnx and its exporter are installed."""
    out = {fmt: originals[fmt] for fmt in STRUCTURAL if fmt in originals}
    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript")) and "torch" in installed():
        data, _ = FORMATS["onnx"].write(canonical.random_params(plan(), SEED), plan())
        assert isinstance(data, bytes)
        out["onnx"] = data
    return out


def refusal(src: Path, dst: Path) -> str:
    """The PortError ``port`` raises for ``src``, or what happened instead."""
    try:
        port(src, dst, VARIANT)
    except PortError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - a traceback is what the structural fuzzing looks for
        return "EXCEPTION " + traceback.format_exc()[-1500:]
    return "PORTED: accepted a file no reader may accept"


def test_structural_mutations_are_refused_in_one_message(structural_originals, tmp_path, capsys):
    """Issue 24, rows 1, 2, 4 and 5: a zip "version needed" no reader implements, an HDF5
    hard link back to the root, an ONNX graph of more empty nodes than the network has,
    two initializers of one name. Each is refused (never ported) in one line, within
    1 GB; seeded, two draws of each."""
    rng = np.random.default_rng(SEED)
    failures, seen = [], []
    for fmt, mutations in STRUCTURAL.items():
        if fmt not in structural_originals:
            continue
        suffix = SUFFIX.get(fmt, ".onnx")
        for kind, edit in mutations.items():
            for draw in range(2):
                src = tmp_path / f"{fmt}-{kind}-{draw}{suffix}"
                src.write_bytes(edit(structural_originals[fmt], rng))
                got: list[str] = []
                grown = peak_growth_mb(lambda src=src, got=got: got.append(refusal(src, tmp_path / "out.npz")))
                seen.append((fmt, kind))
                reason = re.search(STRUCTURAL_REASON[kind], got[0]) and "\n" not in got[0]
                if not reason or (grown is not None and grown > PEAK_GROWTH_MB):
                    failures.append(f"{fmt} {kind} draw {draw}: {got[0][:1500]}; peak growth {grown} MB")
                assert not (tmp_path / "out.npz").exists()
    with capsys.disabled():
        print(f"\nstructural fuzz: {len(seen)} cases, seed {SEED}, formats {sorted({f for f, _ in seen})}")
    assert seen, "no format of the structural mutations is installed"
    assert not failures, "\n\n".join(failures)


def test_structural_mutations_on_the_command_line(structural_originals, tmp_path):
    """One drawn structural case as a user runs it: exit 2, one line, under 1 GB."""
    rng = np.random.default_rng(SEED + 2)
    pairs = [(f, k) for f, m in STRUCTURAL.items() if f in structural_originals for k in m]
    fmt, kind = pairs[int(rng.integers(0, len(pairs)))]
    src = tmp_path / f"cli{SUFFIX.get(fmt, '.onnx')}"
    src.write_bytes(STRUCTURAL[fmt][kind](structural_originals[fmt], rng))
    m = hostile.run_measured(hostile.cli("port", str(src), str(tmp_path / "cli.npz"), "--variant", VARIANT))
    assert m.returncode == 2, (fmt, kind, m.returncode, m.stderr[-3000:])
    assert "Traceback" not in m.stderr and m.stderr.count("\n") == 1 and m.stderr.startswith("error:"), m.stderr
    assert m.peak_mb < 1000, (fmt, kind, m.peak_mb)


def test_the_fuzzer_covers_every_format_and_mutation():
    assert set(SPECIFIC) == set(SUFFIX) and all(
        set(v) == set(MUTATIONS) - {"truncate", "flip"} for v in SPECIFIC.values()
    )
    assert set(frameworks.FRAMEWORKS) >= {FORMATS[f].framework for f in SUFFIX} - {None}
    assert set(STRUCTURAL) <= set(SUFFIX) | {"onnx"} and all(STRUCTURAL.values())
