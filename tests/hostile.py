"""Hostile files (small on disk, huge in what they declare) and a measured subprocess.

Each builder writes a file that a careless reader turns into gigabytes or a traceback
(the reproductions of issues 9 and 24); none allocates much itself: large contents are
streamed through zlib, sparse files are never written. Used by ``tests/test_hostile.py``,
``tests/test_port_errors.py``, ``tests/test_fuzz.py`` and ``benchmarks/bench_hostile.py``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conformance import spec

from .helpers import seeded_params

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "inception_mnist"  # small: its valid files build in a second
GUARD = 6 << 30  # address-space limit of a measured child: a regression fails, the machine lives


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float  # the child's peak resident memory
    seconds: float


# The measured command runs as the grandchild of a small launcher: a child forked from
# this (large) test process starts with this process's resident pages, and a vfork'd one
# hands this process's peak to the kernel at exec, so either would report our memory,
# not its own. The launcher is a fresh interpreter of ~10 MB; it forks, limits, execs
# the command, and reports the command's own rusage.
_LAUNCHER = """
import json, os, resource, signal, sys
limit, ignore_xfsz, report, args = json.loads(sys.argv[1])
pid = os.fork()
if pid == 0:
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if ignore_xfsz:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fsize = os.environ.pop("MEASURED_FSIZE", None)
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), int(fsize)))
    os.execv(args[0], args)
signal.signal(signal.SIGINT, lambda *a: os.kill(pid, signal.SIGINT))
signal.signal(signal.SIGTERM, lambda *a: os.kill(pid, signal.SIGTERM))
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], f)
"""


def run_measured(
    args: list[str],
    timeout: float = 300,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    limit_as: int | None = GUARD,
    ignore_xfsz: bool = False,
) -> Measured:
    """Run ``args``, measuring its own peak resident memory (``wait4`` in the launcher)."""
    import json
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, json.dumps([limit_as, ignore_xfsz, report.name, args])],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
        seconds = time.perf_counter() - start
        returncode, maxrss = json.loads(Path(report.name).read_text() or "[null, 0]")
    assert returncode is not None, r.stderr
    return Measured(returncode, r.stdout, r.stderr, maxrss / 1024, seconds)


def keras_model():
    import impl_keras

    model = impl_keras.build(VARIANT)
    impl_keras.from_canonical(model, seeded_params(VARIANT))
    return model


def h5_path(key: str) -> str:
    """The HDF5 dataset holding canonical ``key`` in what Keras's ``save_weights``
    writes for ``VARIANT`` (Keras names a functional model's groups by layer class,
    ``layers/dense/vars/0``): taken from the suite's own probe of that layout."""
    from conformance.formats import base, keras_files

    p = spec.resolve(VARIANT)
    layout = keras_files._keras_layout(p, lambda: base.built("keras", p))
    return next(path for path, (k, _) in layout.items() if k == key)


def keras_file(path: Path) -> Path:
    keras_model().save(str(path))
    return path


def _zip_stream(z: zipfile.ZipFile, name: str, head: bytes, fill: bytes, size: int) -> None:
    """A member of ``head`` then ``size`` bytes of ``fill`` repeated, streamed (deflated)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with z.open(info, "w", force_zip64=True) as f:
        f.write(head)
        chunk = fill * (1 << 20)
        left = size
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


# --------------------------------------------------------------------------------------
# The reproductions of issue 9, case 2
# --------------------------------------------------------------------------------------


def weights_h5_undeclared(path: Path, classes: int = 500_000) -> Path:
    """A real .weights.h5 whose fc kernel is replaced by a (1408, ``classes``) dataset
    that has no data: a few hundred KB declaring 2.8 GB."""
    import h5py

    keras_model().save_weights(str(path))
    fc = h5_path("fc.weight")
    with h5py.File(path, "r+") as f:
        del f[fc]
        f.create_dataset(fc, shape=(1408, classes), dtype="f4")  # storage allocated late: never
    return path


def keras_classes(path: Path, classes: int = 500_000) -> Path:
    """A real .keras file whose config.json says ``classes`` classes."""
    original = keras_file(path.with_name("original.keras"))
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                config["config"]["num_classes"] = classes
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    return path


def keras_padded_config(path: Path, spaces: int = 1_100_000_000) -> Path:
    """A real .keras file whose config.json is valid JSON after ``spaces`` spaces."""
    original = keras_file(path.with_name("original.keras"))
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "config.json":
                _zip_stream(dst, "config.json", src.read(info), b" ", spaces)  # trailing spaces: valid JSON
            else:
                dst.writestr(info, src.read(info))
    return path


def safetensors_sparse(path: Path, gib: int = 8) -> Path:
    """A header declaring one ``gib`` GiB float32 tensor, over a sparse file of that
    length: 4 KB on disk."""
    n = gib << 30
    header = json.dumps({"fc.weight": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n)
    return path


def pth_valid(path: Path) -> Path:
    """A valid .pth of the network (the reference the refusals are compared with)."""
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in seeded_params(VARIANT).items()}, path)
    return path


def pth_expanded(path: Path, n: int) -> Path:
    """A .pth whose fc.weight is ``torch.zeros(1).expand(n, n)``: one stored float."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in seeded_params(VARIANT).items()}
    state["fc.weight"] = torch.zeros(1).expand(n, n)
    torch.save(state, path)
    return path


def npz_deflated(path: Path, shape: tuple[int, int] = (1408, 200_000)) -> Path:
    """A deflated .npz member of zeros: about 1 MB declaring ``shape`` float32 (1.1 GB)."""
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, value in seeded_params(VARIANT).items():
            if key != "fc.weight":
                buffer = io.BytesIO()
                np.save(buffer, value)
                z.writestr(f"{key}.npy", buffer.getvalue())
        _zip_stream(z, "fc.weight.npy", header.getvalue(), b"\0", shape[0] * shape[1] * 4)
    return path


def idx_gzipped(directory: Path, images: int = 1_500_000) -> Path:
    """An MNIST directory whose gzipped training images declare ``images`` 28 x 28
    images (1.2 GB) and hold them, as zeros: about 1.2 MB."""
    from conformance.train import data

    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    data.write_idx(directory / "train-labels-idx1-ubyte", rng.integers(0, 10, images).astype(np.uint8))
    data.write_idx(directory / "t10k-images-idx3-ubyte", rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    data.write_idx(directory / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 8).astype(np.uint8))
    with gzip.open(directory / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", data.IMAGES_MAGIC, images, 28, 28))
        chunk = b"\0" * (1 << 20)
        left = images * 28 * 28
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return directory


def caffe_empty_layers(path: Path, layers: int = 50_000_000) -> Path:
    """A .caffemodel of ``layers`` empty V1 layers, 2 bytes each (100 MB, under what
    googlenet_lrn can hold): protobuf would allocate some 60 bytes for each, 3 GB."""
    with open(path, "wb") as f:
        f.write(b"\n\tGoogleNet")
        chunk = b"\x12\x00" * (1 << 20)
        for _ in range(layers >> 20):
            f.write(chunk)
        f.write(b"\x12\x00" * (layers & ((1 << 20) - 1)))
    return path


# --------------------------------------------------------------------------------------
# The reproductions of issue 24 (file formats): byte-level edits of valid files, so the
# fuzz suite draws them too
# --------------------------------------------------------------------------------------

CENTRAL = b"PK\x01\x02"  # a zip central-directory record; "version needed" is its byte 6


def zip_version_needed(data: bytes, record: int = 0, version: int = 0xFF) -> bytes:
    """A zip archive whose ``record``-th central-directory entry needs zip ``version``
    (0xFF: 25.5, which Python's zipfile refuses with NotImplementedError)."""
    at = -1
    for _ in range(record + 1):
        at = data.index(CENTRAL, at + 1)
    out = bytearray(data)
    out[at + 6] = version
    return bytes(out)


def h5_linked_to_root(data: bytes, name: str = "L" * 10_000, group: str = "layers") -> bytes:
    """A .weights.h5 (its bytes) with a hard link named ``name`` from ``group`` back to
    the root: a cycle, 10 KB of name per lap."""
    import h5py

    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        f[group][name] = f["/"]
    return buffer.getvalue()


def keras_member_edited(data: bytes, member: str, edit) -> bytes:
    """A .keras archive (its bytes) with one member replaced by ``edit(member bytes)``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            dst.writestr(info, edit(content) if info.filename == member else content)
    return out.getvalue()


class _Allocates:
    """Pickles as a call of ``bytearray(n)``, which torch's weights_only unpickler allows."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return (bytearray, (self.n,))


def pth_allocating(path: Path, n: int = 2_500_000_000) -> Path:
    """A zipped .pth (``torch.save``) whose pickle calls ``bytearray(n)``: about 1 KB."""
    import torch

    torch.save({"fc.weight": _Allocates(n)}, path)
    return path


def pickle_allocating(path: Path, n: int = 2_500_000_000) -> Path:
    """An old-style (not zipped) .pth: one pickle calling ``bytearray(n)``, under 50 bytes."""
    import pickle

    path.write_bytes(pickle.dumps(_Allocates(n), protocol=2))
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)


def onnx_empty_nodes(nodes: int, data: bytes = b"") -> bytes:
    """An ONNX ModelProto with a graph of ``nodes`` empty nodes (``0a 00`` each): alone,
    or after ``data`` (a valid model: protobuf merges a second graph field into the
    first, appending its nodes)."""
    body = b"\x0a\x00" * nodes
    graph = b"\x3a" + _varint(len(body)) + body
    return (data or b"\x08\x08") + graph


def onnx_duplicate_initializer(data: bytes, name: str = "conv1.weight") -> bytes:
    """An ONNX model (its bytes) with a second, all-zero initializer named ``name``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    first = next(i for i in model.graph.initializer if i.name == name)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(first)), name))
    return model.SerializeToString()


def symbol_truncated(text: str) -> str:
    """A -symbol.json cut in half."""
    return text[: len(text) // 2]


def symbol_out_of_range(text: str, where: str = "input") -> str:
    """A -symbol.json whose last node's first input (``where="input"``), first head or
    first argument node refers to node 99999."""
    graph = json.loads(text)
    if where == "input":
        next(n for n in reversed(graph["nodes"]) if n["inputs"])["inputs"][0][0] = 99_999
    elif where == "heads":
        graph["heads"][0][0] = 99_999
    else:
        graph["arg_nodes"][0] = 99_999
    return json.dumps(graph)
