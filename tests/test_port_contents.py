"""``port`` reads what a file's framework would load and checks it as strictly in every
format: a name Keras refuses to load is refused before the work, a ``.weights.h5`` is
checked like the others, flipped bytes in a tensor and a corrupt MXNet file are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance import canonical
from conformance.formats.port import PortError, port

from .conftest import backend_or_skip
from .helpers import flip, port_refused, seeded
from .hostile import h5_path


def assert_refused(tmp_path: Path, src: Path, dst_name: str, message: str, **kwargs) -> None:
    port_refused(src, tmp_path / dst_name, kwargs.pop("variant", "googlenet"), message, **kwargs)


def mnist_file(tmp_path: Path, name: str, fmt: str | None = None) -> Path:
    """A valid inception_mnist checkpoint of the format its name says, written by port."""
    p, params = seeded("inception_mnist")
    src = tmp_path / "src.safetensors"
    if not src.exists():
        canonical.save(params, src, p)
    port(src, tmp_path / name, "inception_mnist", dst_format=fmt)
    return tmp_path / name


@pytest.mark.parametrize(
    "name,fmt,hint",
    [("x.h5", "keras-weights", "x.weights.h5"), ("m.zip", "keras", "m.keras"), ("m.weights.h5", "keras", "m.keras")],
)
def test_a_name_keras_refuses_to_load_is_refused_before_the_work(tmp_path, name, fmt, hint):
    """Issue 9, case 0: verification ran on a temporary file named as Keras wants, then
    renamed it to a name Keras refuses: PASS for a file nobody could load."""
    p, params = seeded("inception_mnist")
    canonical.save(params, tmp_path / "a.safetensors", p)
    with pytest.raises(
        PortError, match=rf"DST .*{name}: keras loads .* only from a name ending in .*; name it e.g. {hint}"
    ):
        port(tmp_path / "a.safetensors", tmp_path / name, "inception_mnist", dst_format=fmt)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.safetensors"]


def test_weights_h5_under_another_name_is_still_read(tmp_path):
    backend_or_skip("keras")
    mnist_file(tmp_path, "w.weights.h5").rename(tmp_path / "w.h5")
    assert port(tmp_path / "w.h5", tmp_path / "b.npz", "inception_mnist", src_format="keras-weights").passed


def edit_h5(path: Path, edit) -> Path:
    import h5py

    with h5py.File(path, "r+") as f:
        del f.attrs["conformance_sha256"]  # as a file from elsewhere: no digest of the suite's
        edit(f)
    return path


def test_weights_h5_is_checked_as_strictly_as_the_other_formats(tmp_path):
    """Issue 9, case 5: an int32 kernel was accepted, float16 converted without the
    notice, an extra layer group ignored, a missing variable reported as "received 0
    variables"."""
    backend_or_skip("keras")
    src = mnist_file(tmp_path, "w.weights.h5")

    conv1, fc_bias = h5_path("conv1.weight"), h5_path("fc.bias")

    def retype(dtype):
        def edit(f):
            value = f[conv1][()]
            del f[conv1]
            f[conv1] = value.astype(dtype)

        return edit

    def extra(f):
        f["extra/vars/0"] = np.zeros(3, np.float32)

    def missing(f):
        del f[fc_bias]

    cases = [
        (retype(np.int32), r"'conv1.weight' is int32; expected floating-point weights"),
        (extra, r"unexpected key 'extra/vars/0' \(shape \(3,\)\)"),
        (missing, r"missing key 'fc.bias' \(expected shape \(10,\)\)"),
    ]
    for i, (edit, message) in enumerate(cases):
        bad = tmp_path / f"bad{i}.weights.h5"
        bad.write_bytes(src.read_bytes())
        assert_refused(tmp_path, edit_h5(bad, edit), "out.npz", message, variant="inception_mnist")
    half = tmp_path / "half.weights.h5"
    half.write_bytes(src.read_bytes())
    result = port(edit_h5(half, retype(np.float16)), tmp_path / "half.npz", "inception_mnist")
    assert "converted 1 float16 tensors to float32" in result.notes and result.passed


def flip_file(path: Path, at: int) -> Path:
    """Two bytes of ``path`` flipped in place, at ``at`` and the next."""
    path.write_bytes(flip(path.read_bytes(), [(at, 0xFF), (at + 1, 0x55)]))
    return path


def tensor_offset(path: Path, needle: bytes) -> int:
    """Where a tensor's bytes sit in a file (located by their content)."""
    at = path.read_bytes().find(needle)
    assert at > 0
    return at + len(needle) // 2


@pytest.mark.parametrize(
    "name,message",
    [
        ("w.pth", r"damaged zip archive: Bad CRC-32"),
        ("w.npz", r"damaged zip archive: Bad CRC-32"),
        ("w.keras", r"damaged zip archive: Bad CRC-32"),
        ("w.safetensors", r"damaged: its tensors do not match the SHA-256 recorded in its metadata"),
        ("w.weights.h5", r"damaged: its tensors do not match the SHA-256 recorded in its metadata"),
    ],
)
def test_two_flipped_bytes_in_a_tensor_are_refused(tmp_path, name, message):
    """Issue 9, case 6: the corrupted values were copied faithfully, with PASS."""
    if name.endswith((".pth",)):
        backend_or_skip("torch")
    if name.endswith((".keras", ".h5")):
        backend_or_skip("keras")
    path = mnist_file(tmp_path, name)
    _, params = seeded("inception_mnist")
    weights = params["incep2.branch3x3_3.weight"]
    needle = (
        weights.tobytes()[:64] if not name.endswith((".keras", ".h5")) else weights.transpose(2, 3, 1, 0).tobytes()[:64]
    )
    if name.endswith(".keras"):  # deflated: no tensor bytes to find; flip inside the weights member
        import zipfile

        with zipfile.ZipFile(path) as z:
            info = z.getinfo("model.weights.h5")
        at = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    else:
        at = tensor_offset(path, needle)
    assert_refused(tmp_path, flip_file(path, at), "out.params", message, variant="inception_mnist")


def test_a_corrupt_params_file_says_what_is_wrong(tmp_path):
    """Issue 9, case 8: MXNet's own error printed only "MXNetError: Traceback (most recent
    call last):"."""
    backend_or_skip("mxnet")
    path = mnist_file(tmp_path, "w.params")
    data = bytearray(path.read_bytes())
    data[24:28] = b"\x01\x02\x03\x04"  # the first array's magic
    path.write_bytes(bytes(data))
    assert_refused(tmp_path, path, "o.npz", r"w.params: array 0: magic 0x4030201 is not an MXNet >= 1.0 NDArray")
    path.write_bytes(path.read_bytes()[:-7])
    assert_refused(tmp_path, path, "o.npz", r"w.params: .*array 0: magic|the file ends inside")
