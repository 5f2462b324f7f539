"""Every bad input to ``port`` gets one clear message naming the file, key or option,
and loses nothing: DST stays absent (or untouched), no temporary file is left."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import deploy
from conformance.formats import registry as formats
from conformance.formats.port import PortError, VerificationError, port, read_checkpoint
from conformance.reading import Damaged

from . import hostile
from .conftest import backend_or_skip, cli, save_torch, torch_state
from .hostile import h5_path

ROOT = Path(__file__).resolve().parents[1]


def assert_refused(tmp_path: Path, src: Path, dst_name: str, message: str, **kwargs) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PortError, match=message):
        port(src, tmp_path / dst_name, kwargs.pop("variant", "googlenet"), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no DST, no temporary file


@pytest.fixture
def state():
    return torch_state("googlenet", aux=False)


def test_missing_key(tmp_path, state):
    del state["inception4b.branch2.1.conv.bias"]
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(
        tmp_path,
        src,
        "b.npz",
        r"a.pth: .*missing key 'inception4b.branch2.1.conv.bias' "
        r"\(expected shape \(224,\)\)",
    )


def test_extra_key(tmp_path, state):
    state["classifier.weight"] = state["fc.weight"]
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(tmp_path, src, "b.npz", r"unexpected key 'classifier.weight' \(shape \(1000, 1024\)\)")


def test_shape_mismatch(tmp_path, state):
    state["conv2.conv.weight"] = state["conv2.conv.weight"][:32]
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(
        tmp_path,
        src,
        "b.npz",
        r"shape mismatch at 'conv2.conv.weight': expected \(64, 64, 1, 1\), "
        r"got \(32, 64, 1, 1\)",
    )


def test_checkpoint_of_the_other_variant(tmp_path, state):
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(
        tmp_path,
        src,
        "b.npz",
        r"5x5 branch found .*: this is `googlenet` or `googlenet_lrn`, "
        r"not `googlenet_bn`",
        variant="googlenet_bn",
    )
    assert_refused(
        tmp_path,
        src,
        "b.npz",
        r"3 input channels: this is `googlenet` or `googlenet_lrn`, "
        r"not `googlenet_d2l`",
        variant="googlenet_d2l",
        num_classes=1000,
    )
    bn = save_torch(torch_state("googlenet_bn", aux=False), tmp_path / "bn.pth")
    assert_refused(
        tmp_path,
        bn,
        "b.npz",
        r"3x3 branch found .*: this is `googlenet_bn` or `googlenet_gluoncv` or `googlenet_slim`, "
        r"not `googlenet`",
    )


def test_wrong_number_of_classes_offers_the_option(tmp_path):
    src = save_torch(torch_state("googlenet", aux=False, num_classes=10), tmp_path / "a.pth")
    assert_refused(
        tmp_path,
        src,
        "b.npz",
        r"has 10 classes \(fc.weight is \(10, 1024\)\), not 1000: "
        r"pass num_classes=10",  # the Python API's spelling; the CLI's says --num-classes 10
    )
    assert port(src, tmp_path / "b.npz", "googlenet", num_classes=10).passed


def test_nan_or_inf_is_refused(tmp_path, state):
    state["inception3a.branch1.conv.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"][3] = float("inf")
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(tmp_path, src, "b.npz", r"'inception3a.branch1.conv.weight' holds 1 NaN or Inf values")


def test_integer_weights_are_refused(tmp_path, state):
    state["fc.bias"] = state["fc.bias"].long()
    src = save_torch(state, tmp_path / "a.pth")
    assert_refused(tmp_path, src, "b.npz", r"'fc.bias' is int64; expected floating-point weights")


def test_empty_file(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"")
    assert_refused(tmp_path, tmp_path / "a.pth", "b.npz", r"a.pth: the file is empty")


def _torch_file(params, p, path):
    import torch

    save_torch({k: torch.from_numpy(v) for k, v in params.items()}, path)


@pytest.mark.parametrize(
    "name,writer",
    [
        ("a.pth", _torch_file),
        ("a.safetensors", lambda params, p, path: canonical.save(params, path, p)),
        ("a.npz", lambda params, p, path: np.savez(path, **params)),
    ],
)
def test_truncated_file(tmp_path, name, writer):
    p = spec.resolve("googlenet")
    path = tmp_path / name
    writer(canonical.random_params(p, 0), p, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path, path, "b.params", rf"{name}: .*(damaged|truncated)")


def test_corrupt_file(tmp_path):
    (tmp_path / "a.params").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_refused(
        tmp_path,
        tmp_path / "a.params",
        "b.npz",
        r"a.params: expected MXNet Gluon parameters "
        r"\(mxnet\), but the file is not a known checkpoint format",
    )


def test_another_format_than_the_extension_says(tmp_path):
    p = spec.resolve("googlenet")
    canonical.save(canonical.random_params(p, 0), tmp_path / "real.safetensors", p)
    os.rename(tmp_path / "real.safetensors", tmp_path / "looks.pth")
    assert_refused(
        tmp_path,
        tmp_path / "looks.pth",
        "b.npz",
        r"looks.pth: expected PyTorch state_dict \(torch\), but the file is safetensors "
        r"\(pass src_format='safetensors' if it is canonical safetensors\)",
    )
    assert port(tmp_path / "looks.pth", tmp_path / "b.npz", "googlenet", src_format="safetensors").passed


class Payload:
    """An object whose unpickling would run code of this module."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_needs_code_is_not_loaded(tmp_path, state):
    backend_or_skip("torch")
    import torch

    src = tmp_path / "evil.pth"
    torch.save({"state_dict": state, "hook": Payload()}, src)
    assert_refused(tmp_path, src, "b.npz", r"evil.pth: refusing to load: the pickle needs more than tensors")
    with open(tmp_path / "legacy.pth", "wb") as f:  # a plain pickle, no zip container
        pickle.dump(Payload(), f, protocol=2)
    assert_refused(tmp_path, tmp_path / "legacy.pth", "b.npz", r"legacy.pth: (refusing to load|cannot read)")


def test_object_arrays_in_npz_need_pickle_and_are_refused(tmp_path):
    np.savez(tmp_path / "a.npz", fc=np.array([{"a": 1}], dtype=object))
    assert_refused(tmp_path, tmp_path / "a.npz", "b.pth", r"a.npz: refusing to read: .*allow_pickle=False")


def test_src_equal_to_dst(tmp_path, state):
    src = save_torch(state, tmp_path / "a.pth")
    with pytest.raises(PortError, match=r"DST .*a.pth is SRC"):
        port(src, tmp_path / "." / "a.pth", "googlenet", force=True)


def test_existing_dst_needs_force(tmp_path, state):
    src = save_torch(state, tmp_path / "a.pth")
    (tmp_path / "b.npz").write_bytes(b"precious")
    assert_refused(tmp_path, src, "b.npz", r"DST .*b.npz: already exists; pass force=True to overwrite it")
    assert (tmp_path / "b.npz").read_bytes() == b"precious"


def test_dst_in_a_missing_or_unwritable_directory(tmp_path, state, monkeypatch):
    src = save_torch(state, tmp_path / "a.pth")
    with pytest.raises(PortError, match=r"directory .*nowhere does not exist"):
        port(src, tmp_path / "nowhere" / "b.npz", "googlenet")
    with pytest.raises(PortError, match=r"directory /proc/self is not writable"):
        port(src, "/proc/self/b.npz", "googlenet")
    # root passes os.access everywhere; the directory can still refuse the file itself
    with pytest.raises(PortError, match=r"DST /sys/b.npz: cannot write in /sys"):
        port(src, "/sys/b.npz", "googlenet")


def test_missing_src_unknown_format_and_options(tmp_path, state):
    with pytest.raises(PortError, match=r"SRC .*none.pth: no such file"):
        port(tmp_path / "none.pth", tmp_path / "b.npz", "googlenet")
    src = save_torch(state, tmp_path / "a.pth")
    with pytest.raises(PortError, match=r"b.bin: cannot tell the format from the name .*; pass dst_format"):
        port(src, tmp_path / "b.bin", "googlenet")
    with pytest.raises(PortError, match=r"dst_format: unknown format 'tflite'"):
        port(src, tmp_path / "b.bin", "googlenet", dst_format="tflite")
    with pytest.raises(PortError, match=r"variant: unknown 'inception_v3'"):
        port(src, tmp_path / "b.npz", "inception_v3")
    with pytest.raises(PortError, match=r"num_classes: expected a positive integer, got 0"):
        port(src, tmp_path / "b.npz", "googlenet", num_classes=0)
    with pytest.raises(PortError, match=r"transform_input: variant 'googlenet' defines no input transform"):
        port(src, tmp_path / "b.npz", "googlenet", transform_input=True)


def test_a_failed_verification_writes_nothing(tmp_path, state, monkeypatch):
    """A writer that changes one tensor slightly: the port must catch it and keep DST absent."""
    real = formats.FORMATS["safetensors"]

    def sloppy_write(params, p):
        params = dict(params)
        params["inception4c.branch1.conv.weight"] = params["inception4c.branch1.conv.weight"] * np.float32(1.01)
        return real.write(params, p)

    monkeypatch.setitem(formats.FORMATS, "safetensors", dataclasses.replace(real, write=sloppy_write))
    src = save_torch(state, tmp_path / "a.pth")
    log: list[str] = []
    with pytest.raises(VerificationError, match=r"does not reproduce .*nothing was written"):
        port(src, tmp_path / "b.safetensors", "googlenet", log=log.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]
    assert any("1 tensors changed: ['inception4c.branch1.conv.weight']" in line for line in log)
    assert any("FAIL" in line for line in log)


def port_cli(*args: str):
    return cli("port", *args)


def test_cli_exit_codes_and_one_message(tmp_path, state):
    state["fc.bias"][0] = float("inf")
    src = save_torch(state, tmp_path / "a.pth")
    r = port_cli(str(src), str(tmp_path / "b.npz"), "--variant", "googlenet")
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "'fc.bias' holds 1 NaN or Inf" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b.npz").exists()
    r = port_cli(str(src), str(tmp_path / "b.npz"))
    assert r.returncode == 2 and "--variant" in r.stderr  # two variants fit its tensors: asked for


def test_a_writer_that_crashes_is_a_failed_verification(tmp_path, state, monkeypatch):
    def broken_write(params, p):
        raise OSError("disk full")

    real = formats.FORMATS["safetensors"]
    monkeypatch.setitem(formats.FORMATS, "safetensors", dataclasses.replace(real, write=broken_write))
    src = save_torch(state, tmp_path / "a.pth")
    with pytest.raises(VerificationError, match=r"writing .* failed \(OSError: disk full\)"):
        port(src, tmp_path / "b.safetensors", "googlenet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]


def test_dst_appearing_during_the_port_is_not_overwritten(tmp_path, state, monkeypatch):
    import conformance.formats.port as port_module

    real_verify = port_module.verify

    def verify_while_someone_writes(*args):
        (tmp_path / "b.safetensors").write_bytes(b"someone else's")
        return real_verify(*args)

    monkeypatch.setattr(port_module, "verify", verify_while_someone_writes)
    src = save_torch(state, tmp_path / "a.pth")
    with pytest.raises(PortError, match=r"appeared meanwhile; pass force=True"):
        port(src, tmp_path / "b.safetensors", "googlenet")
    assert (tmp_path / "b.safetensors").read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.safetensors"]


def test_a_load_that_silently_restores_nothing_fails_verification(tmp_path, state, monkeypatch):
    """The written file is loaded into a model wiped to NaN: a loader that does nothing
    leaves NaN behind, so the check cannot pass on the writer's own weights."""
    t = backend_or_skip("torch")
    monkeypatch.setattr(t.GoogLeNet, "load_state_dict", lambda self, *a, **k: None)
    src = save_torch(state, tmp_path / "a.npz.pth")
    log: list[str] = []
    with pytest.raises(VerificationError, match=r"nothing was written"):
        port(src, tmp_path / "b.pth", "googlenet", log=log.append)
    assert any("116 tensors changed" in line for line in log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz.pth"]


# --------------------------------------------------------------------------------------
# Issue 9: what a file's framework loads (case 0), .weights.h5 checked like the others
# (case 5), corruption (case 6), messages (case 8)
# --------------------------------------------------------------------------------------


def mnist_params(seed: int = 0):
    p = spec.resolve("inception_mnist")
    return p, canonical.random_params(p, seed)


def mnist_file(tmp_path: Path, name: str, fmt: str | None = None) -> Path:
    """A valid inception_mnist checkpoint of the format its name says, written by port."""
    p, params = mnist_params()
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
    p, params = mnist_params()
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


def flip(path: Path, at: int) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    data[at + 1] ^= 0x55
    path.write_bytes(bytes(data))
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
    _, params = mnist_params()
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
    assert_refused(tmp_path, flip(path, at), "out.params", message, variant="inception_mnist")


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


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates making quantised tensors; files hold them
def test_torch_tensors_that_are_not_dense_floats(tmp_path, state):
    """Issue 9, case 8: bfloat16, sparse and quantised tensors showed raw TypeErrors."""
    import torch

    wide = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in state.items()}
    result = port(save_torch(wide, tmp_path / "bf16.pth"), tmp_path / "bf16.npz", "googlenet")
    assert "converted 116 bfloat16 tensors to float32 (exact)" in result.notes and result.passed
    sparse = dict(state, **{"fc.bias": state["fc.bias"].to_sparse()})
    assert_refused(tmp_path, save_torch(sparse, tmp_path / "sparse.pth"), "o.npz", r"'fc.bias' is a sparse tensor")
    quantised = dict(state, **{"fc.bias": torch.quantize_per_tensor(state["fc.bias"], 0.1, 0, torch.qint8)})
    assert_refused(
        tmp_path, save_torch(quantised, tmp_path / "q.pth"), "o.npz", r"'fc.bias' is quantised \(torch.qint8\)"
    )


def test_src_a_directory_or_a_fifo(tmp_path):
    (tmp_path / "d.pth").mkdir()
    os.mkfifo(tmp_path / "f.pth")
    with pytest.raises(PortError, match=r"SRC .*d.pth: a directory; give a checkpoint file"):
        port(tmp_path / "d.pth", tmp_path / "o.npz", "googlenet")
    with pytest.raises(PortError, match=r"SRC .*f.pth: a FIFO \(named pipe\), not a regular file"):
        port(tmp_path / "f.pth", tmp_path / "o.npz", "googlenet")


def test_a_dangling_symlink_dst_is_refused_before_reading(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"not read: the DST is refused first")
    (tmp_path / "o.npz").symlink_to(tmp_path / "nowhere.npz")
    with pytest.raises(PortError, match=r"DST .*o.npz: a symbolic link to nothing"):
        port(tmp_path / "a.pth", tmp_path / "o.npz", "googlenet")


def test_weights_whose_logits_overflow_are_named_as_such(tmp_path):
    """Issue 9, case 8: a finite 3e38 weight said "the written file does not reproduce"
    while the weights were bit-identical."""
    p, params = mnist_params()
    params["fc.bias"][0] = np.float32(3e38)
    params["fc.weight"][0] = np.float32(3e38)
    canonical.save(params, tmp_path / "a.safetensors", p)
    assert_refused(
        tmp_path,
        tmp_path / "a.safetensors",
        "o.npz",
        r"the weights were copied bit-identically, but the logits \(\w+\) overflow float32 .* as large as 3.0e\+38 "
        r"\(in 'fc.weight'\)",
        variant="inception_mnist",
    )


def test_a_big_endian_npz_is_converted_with_a_notice(tmp_path):
    _, params = mnist_params()
    np.savez(tmp_path / "be.npz", **{k: v.astype(">f4") for k, v in params.items()})
    result = port(tmp_path / "be.npz", tmp_path / "o.safetensors", "inception_mnist")
    assert "converted 34 big-endian float32 tensors to float32" in result.notes and result.passed
    loaded = canonical.load(tmp_path / "o.safetensors")
    assert all(np.array_equal(loaded[k], params[k]) for k in params)


def test_a_truncated_pth_is_called_damaged(tmp_path, state):
    path = save_torch(state, tmp_path / "a.pth")
    path.write_bytes(path.read_bytes()[:-1000])
    assert_refused(
        tmp_path,
        path,
        "o.npz",
        r"a.pth: a damaged PyTorch state_dict file: PyTorch state_dict files are zip archives, "
        r"and this one's directory cannot be read \(a damaged zip archive: File is not a zip file \(truncated",
    )


def test_the_python_api_speaks_python_and_the_cli_speaks_options(tmp_path, state):
    """Issue 9, case 8: PortError told a Python caller to "pass --force"."""
    src = save_torch(state, tmp_path / "a.pth")
    (tmp_path / "b.npz").write_bytes(b"old")
    with pytest.raises(PortError) as e:
        port(src, tmp_path / "b.npz", "googlenet")
    assert str(e.value).endswith("already exists; pass force=True to overwrite it")
    assert e.value.cli.endswith("already exists; pass --force to overwrite it")
    r = port_cli(str(src), str(tmp_path / "b.npz"), "--variant", "googlenet")
    assert r.returncode == 2 and r.stderr.strip().endswith("pass --force to overwrite it"), r.stderr


def test_logits_that_overflow_in_only_one_framework(tmp_path):
    """Found by fuzzing: one weight of 2.7e38 leaves Keras's logits finite and makes
    PyTorch's NaN; the port is refused as an overflow, not as a failed verification."""
    k = backend_or_skip("keras")
    backend_or_skip("torch")
    _, params = mnist_params()
    params["incep1.branch3x3_3.weight"][5, 4, 0, 2] = np.float32(2.6867388e38)
    model = k.build("inception_mnist")
    k.from_canonical(model, params)
    model.save_weights(str(tmp_path / "big.weights.h5"))
    assert_refused(
        tmp_path,
        tmp_path / "big.weights.h5",
        "o.pth",
        r"copied bit-identically, but the logits \(torch\) overflow float32 .* \(in 'incep1.branch3x3_3.weight'\)",
        variant="inception_mnist",
    )


# --------------------------------------------------------------------------------------
# Issue 24: hostile files (rows 1-5, 11) and what port's log says of checksums
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory) -> dict[str, Path]:
    """Valid inception_mnist files of the formats the rows edit, where their frameworks
    are installed (as ``init`` writes them)."""
    d = tmp_path_factory.mktemp("mnist")
    p, params = mnist_params()
    src = d / "m.safetensors"
    canonical.save(params, src, p)
    out = {"safetensors": src}
    wanted = {"npz": "m.npz", "torch": "m.pth", "keras": "m.keras", "keras-weights": "m.weights.h5"}
    wanted |= {"mxnet": "m.params", "gluon-export": "m-symbol.json", "onnx": "m.onnx"}
    for fmt, name in wanted.items():
        try:
            port(src, d / name, "inception_mnist", dst_format=fmt)
        except PortError:  # its framework (or onnx) is not installed
            continue
        out[fmt] = d / name
    return out


def need(mnist_files: dict[str, Path], fmt: str) -> Path:
    if fmt not in mnist_files:
        pytest.skip(f"{fmt} cannot be written here (framework not installed)")
    return mnist_files[fmt]


def one_line_refusal(src: Path, dst: Path, pattern: str, variant: str = "inception_mnist") -> str:
    with pytest.raises(PortError) as e:
        port(src, dst, variant)
    assert "\n" not in e.value.cli and "Traceback" not in e.value.cli, e.value.cli
    assert re.search(pattern, e.value.cli), e.value.cli
    assert not dst.exists()
    return e.value.cli


@pytest.mark.parametrize("fmt", ["npz", "torch", "keras"])
def test_a_zip_version_no_reader_implements_is_refused(tmp_path, mnist_files, fmt):
    """Row 1: NotImplementedError from zipfile escaped sniff() as a traceback; diff too."""
    original = need(mnist_files, fmt)
    src = tmp_path / original.name
    src.write_bytes(hostile.zip_version_needed(original.read_bytes()))
    one_line_refusal(src, tmp_path / "o.safetensors", rf"{src.name}: a damaged .*zip file version 25.5")
    with pytest.raises(PortError, match=r"zip file version 25\.5"):
        read_checkpoint(src, "inception_mnist")  # what diff reads with
    later = tmp_path / f"later{original.suffix}"  # a later record: the directory is read, its member is not
    later.write_bytes(hostile.zip_version_needed(original.read_bytes(), record=2))
    one_line_refusal(later, tmp_path / "o.safetensors", r"zip file version 25.5")


@pytest.mark.parametrize("name", ["L", "L" * 10_000])
def test_an_hdf5_link_back_to_the_root_is_refused_at_once(tmp_path, mnist_files, name):
    """Row 2: the walk followed the cycle into gigabytes. A one-letter link is refused as
    the second link to the root (not by the object count), a long one by its path."""
    original = need(mnist_files, "keras-weights")
    src = tmp_path / "c.weights.h5"
    src.write_bytes(hostile.h5_linked_to_root(original.read_bytes(), name))
    reason = "second link to an object" if len(name) == 1 else "path is 10,007 characters"
    one_line_refusal(src, tmp_path / "o.npz", reason)
    keras = tmp_path / "c.keras"
    keras.write_bytes(
        hostile.keras_member_edited(
            need(mnist_files, "keras").read_bytes(), "model.weights.h5", lambda b: hostile.h5_linked_to_root(b, name)
        )
    )
    one_line_refusal(keras, tmp_path / "o.npz", reason)


def test_an_hdf5_cycle_on_the_command_line_stays_small(tmp_path, mnist_files):
    src = tmp_path / "c.weights.h5"
    src.write_bytes(hostile.h5_linked_to_root(need(mnist_files, "keras-weights").read_bytes()))
    m = hostile.run_measured(hostile.cli("port", str(src), str(tmp_path / "o.npz"), "--variant", "inception_mnist"))
    assert m.returncode == 2 and m.stderr.count("\n") == 1 and "Traceback" not in m.stderr, m.stderr
    assert m.peak_mb < 500, m.peak_mb


@pytest.mark.parametrize("zipped", [True, False])
def test_a_pickle_allocating_gigabytes_is_refused_before_torch_runs_it(tmp_path, zipped):
    """Row 3: torch's weights_only allows bytearray(N); 2.67 GB were allocated before the
    refusal. The replay refuses it with the file's size as the bound."""
    backend_or_skip("torch")
    src = hostile.pth_allocating(tmp_path / "a.pth") if zipped else hostile.pickle_allocating(tmp_path / "a.pth")
    m = hostile.run_measured(hostile.cli("port", str(src), str(tmp_path / "o.npz"), "--variant", "inception_mnist"))
    assert m.returncode == 2 and m.stderr.count("\n") == 1, m.stderr
    assert "calls __builtin__.bytearray(2,500,000,000): an allocation larger than the file's" in m.stderr
    assert m.peak_mb < 500, m.peak_mb


def test_the_pickle_replay_bounds_by_the_file_not_by_kind(tmp_path):
    """Negative controls: a real state_dict's pickle replays; a bytearray within the file's
    size passes the replay (and is then refused as not a state_dict); a storage larger than
    its data member is refused."""
    from conformance.formats import pickles

    backend_or_skip("torch")
    import torch

    valid = save_torch({"w": torch.zeros(3, 4)}, tmp_path / "v.pth")
    with zipfile.ZipFile(valid) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    pickles.check_zipped(data, "data.pkl", {"0": 48}, valid.stat().st_size)
    with pytest.raises(Damaged, match=r"declares a storage of 12 elements; the file holds 8 bytes for it"):
        pickles.check_zipped(data, "data.pkl", {"0": 8}, valid.stat().st_size)
    small = hostile.pth_allocating(tmp_path / "s.pth", 100)
    one_line_refusal(small, tmp_path / "o.npz", r"expected a state_dict")
    legacy = hostile.pickle_allocating(tmp_path / "l.pth", 10)
    pickles.check_legacy(legacy)
    with pytest.raises(Damaged, match=r"bytearray\(1,000\): an allocation larger than the file's \d+ bytes"):
        pickles.check_legacy(hostile.pickle_allocating(tmp_path / "k.pth", 1000))


def test_an_onnx_graph_of_empty_nodes_is_counted_before_it_is_parsed(tmp_path):
    """Row 4: 20 MB of empty nodes parsed into 1.6 GB; googlenet_bn admits 209 MB files."""
    src = tmp_path / "n.onnx"
    src.write_bytes(hostile.onnx_empty_nodes(10_000_000))
    m = hostile.run_measured(hostile.cli("port", str(src), str(tmp_path / "o.npz"), "--variant", "googlenet_bn"))
    assert m.returncode == 2 and m.stderr.count("\n") == 1, m.stderr
    assert "n.onnx: its graphs hold more than 14,896 nodes" in m.stderr
    assert m.peak_mb < 500, m.peak_mb


def test_the_onnx_counts_are_the_files_own(tmp_path, mnist_files):
    """Negative controls: the walk counts what protobuf parses (so a bound exactly at a
    valid file's count passes and one below refuses), and nodes appended in a second
    graph field (which protobuf merges) are counted."""
    import onnx

    from conformance.formats import onnxwire

    original = need(mnist_files, "onnx")
    graph = onnx.load(str(original)).graph
    counts = onnxwire.check(original, onnxwire.Bounds(10**9, 10**9, 10**9))
    assert (counts.nodes, counts.initializers) == (len(graph.node), len(graph.initializer))
    onnxwire.check(original, onnxwire.Bounds(counts.nodes, counts.initializers, counts.fields))
    for short in (
        onnxwire.Bounds(counts.nodes - 1, counts.initializers, counts.fields),
        onnxwire.Bounds(counts.nodes, counts.initializers - 1, counts.fields),
        onnxwire.Bounds(counts.nodes, counts.initializers, counts.fields - 1),
    ):
        with pytest.raises(Damaged, match="more than"):
            onnxwire.check(original, short)
    more = tmp_path / "more.onnx"
    more.write_bytes(hostile.onnx_empty_nodes(5, original.read_bytes()))
    assert onnxwire.check(more, onnxwire.Bounds(10**9, 10**9, 10**9)).nodes == counts.nodes + 5
    assert len(onnx.load(str(more)).graph.node) == counts.nodes + 5
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(original.read_bytes()[:-1000])
    one_line_refusal(truncated, tmp_path / "o.npz", r"cut.onnx: .*(past|truncated)")


def test_two_initializers_of_one_name_are_refused(tmp_path, mnist_files):
    """Row 5: port wrote the second (zeros); ONNX Runtime runs the first."""
    import onnx
    from onnx import numpy_helper

    original = need(mnist_files, "onnx")
    src = tmp_path / "d.onnx"
    src.write_bytes(hostile.onnx_duplicate_initializer(original.read_bytes()))
    one_line_refusal(src, tmp_path / "o.npz", r"two initializers are named 'conv1.weight'")
    other = onnx.load(str(original))  # negative control: another name is not a duplicate
    other.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "conv1.extra"))
    onnx.save(other, str(tmp_path / "e.onnx"))
    message = one_line_refusal(tmp_path / "e.onnx", tmp_path / "o.npz", r"unexpected key 'conv1.extra'")
    assert "two initializers" not in message


@pytest.mark.parametrize("edit", ["truncated", "input", "heads", "arg_nodes"])
def test_a_broken_symbol_json_is_one_line(tmp_path, mnist_files, edit):
    """Row 11: MXNet's parser answered with a C++ "Traceback" of several lines."""
    symbol = need(mnist_files, "gluon-export")
    src = tmp_path / "g-symbol.json"
    text = symbol.read_text()
    src.write_text(hostile.symbol_truncated(text) if edit == "truncated" else hostile.symbol_out_of_range(text, edit))
    (tmp_path / "g-0000.params").write_bytes(deploy.params_of(symbol).read_bytes())
    pattern = "not JSON" if edit == "truncated" else r"refers to node 99999; the graph has nodes 0 to \d+"
    one_line_refusal(src, tmp_path / "o.npz", pattern)


@pytest.mark.parametrize("dst,fmt", [("g-symbol.json", "gluon-export"), ("sm", "savedmodel")])
def test_a_file_size_limit_during_a_framework_write_is_one_line(tmp_path, mnist_files, dst, fmt):
    """Row 11: under ``ulimit -f 200`` the Gluon and SavedModel writers (their own C++
    streams) failed with exit 1 and several lines."""
    backend_or_skip("mxnet" if fmt == "gluon-export" else "keras")
    src = need(mnist_files, "npz")
    m = hostile.run_measured(
        hostile.cli("port", str(src), str(tmp_path / dst), "--to", fmt, "--variant", "inception_mnist"),
        env={"MEASURED_FSIZE": str(200 * 1024)},
        ignore_xfsz=True,
    )
    assert m.returncode == 2, (m.returncode, m.stderr[-2000:])
    assert m.stderr.count("\n") == 1 and "Traceback" not in m.stderr, m.stderr
    assert f"DST {tmp_path / dst}: writing" in m.stderr and "file-size limit is full" in m.stderr, m.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_log_says_which_sources_carry_no_checksum(tmp_path, mnist_files):
    """Bit flips in .params and .caffemodel data port silently: the log says so for the
    formats without a checksum, and not for those whose checksum is verified."""
    lines: list[str] = []
    port(need(mnist_files, "mxnet"), tmp_path / "a.npz", "inception_mnist", log=lines.append)
    assert any(line.startswith("note   mxnet: MXNet Gluon parameters files carry no checksum") for line in lines)
    for fmt in ("npz", "safetensors"):  # zip CRC-32; the suite's SHA-256
        lines.clear()
        port(need(mnist_files, fmt), tmp_path / f"{fmt}.pth", "inception_mnist", log=lines.append)
        assert not any("checksum" in line or "SHA-256" in line for line in lines), lines
    assert formats.FORMATS["caffe"].checksum == "" and formats.FORMATS["torch"].checksum
