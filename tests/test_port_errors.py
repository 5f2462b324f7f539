"""Every bad input to ``port`` gets one clear message naming the file, key or option,
and loses nothing: DST stays absent (or untouched), no temporary file is left."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import registry as formats
from conformance.formats.port import PortError, VerificationError, port

from .conftest import backend_or_skip, cli, save_torch, torch_state
from .helpers import assert_refused as assert_cli_refused
from .helpers import port_refused, seeded

ROOT = Path(__file__).resolve().parents[1]


def assert_refused(tmp_path: Path, src: Path, dst_name: str, message: str, **kwargs) -> None:
    port_refused(src, tmp_path / dst_name, kwargs.pop("variant", "googlenet"), message, **kwargs)


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
    assert_cli_refused(r, "'fc.bias' holds 1 NaN or Inf", alone=False)
    assert not (tmp_path / "b.npz").exists()
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
    p, params = seeded("inception_mnist")
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
    _, params = seeded("inception_mnist")
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
    _, params = seeded("inception_mnist")
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
