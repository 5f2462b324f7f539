"""``conformance.port``: every format in and out, checkpoints from the outside world,
each conversion verified. Error cases are in test_port_errors.py."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import REL_TOL, agreement
from conformance.formats.port import port

from .conftest import backend_or_skip, cli, save_torch, torch_state


def assert_verified(result, log: list[str]) -> None:
    assert result.passed and not result.changed, log
    for name, a in result.agreement.items():
        assert a.max_rel <= REL_TOL and a.top1 == 1.0 and a.top5 == 1.0, (name, a)


def test_pth_to_keras_to_mxnet_to_pth_is_bit_for_bit(tmp_path):
    for name in ("keras", "mxnet"):
        backend_or_skip(name)
    import torch

    original = torch_state("googlenet_bn", transform_input=True)
    files = [
        save_torch(original, tmp_path / "tv.pth"),
        tmp_path / "k.weights.h5",
        tmp_path / "m.params",
        tmp_path / "back.pth",
    ]
    for src, dst in itertools.pairwise(files):
        log: list[str] = []
        result = port(src, dst, "googlenet_bn", transform_input=True, log=log.append)
        assert_verified(result, log)
        assert set(result.agreement) == {"logits", "aux1", "aux2"}
        assert any("PASS" in line for line in log) and any(line.startswith("wrote") for line in log)
    back = torch.load(files[-1], weights_only=True)
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.pth", "k.weights.h5", "m.params", "tv.pth"]


def test_canonical_formats_and_whole_keras_models(tmp_path):
    backend_or_skip("keras")
    chain = [
        save_torch(torch_state("googlenet", aux=False), tmp_path / "wzmiaomiao.pth"),
        tmp_path / "w.safetensors",
        tmp_path / "w.npz",
        tmp_path / "model.keras",
        tmp_path / "again.pt",
    ]
    for src, dst in itertools.pairwise(chain):
        log: list[str] = []
        result = port(src, dst, "googlenet", log=log.append)
        assert_verified(result, log)
        assert set(result.agreement) == {"logits"}  # no aux heads in, none out
    assert canonical.load(chain[1]).keys() == canonical.canonical_shapes(spec.resolve("googlenet")).keys()


def test_torchvision_dict_wrapped_with_module_prefix_and_no_aux_keys(tmp_path):
    state = {f"module.{k}": v for k, v in torch_state("googlenet_bn", aux=False).items()}
    src = save_torch({"state_dict": state, "epoch": 90}, tmp_path / "ckpt.pth")
    log: list[str] = []
    result = port(src, tmp_path / "w.safetensors", "googlenet_bn", log=log.append)
    assert_verified(result, log)
    assert "took the state_dict under the 'state_dict' key" in result.notes
    assert "removed the 'module.' prefix (DataParallel)" in result.notes
    assert "dropped 57 num_batches_tracked counters (not weights)" in result.notes
    assert not any(k.startswith("aux") for k in canonical.load(tmp_path / "w.safetensors"))
    src = save_torch({"model": torch_state("googlenet_bn", aux=True)}, tmp_path / "ckpt2.pth")
    assert "took the state_dict under the 'model' key" in port(src, tmp_path / "w2.npz", "googlenet_bn").notes


def test_wzmiaomiaos_checkpoint_ports_without_renaming(tmp_path):
    keras = backend_or_skip("keras")
    import torch

    from .wzmiaomiao_googlenet import GoogLeNet as WZGoogLeNet

    torch.manual_seed(0)
    net = WZGoogLeNet(num_classes=1000, aux_logits=True).eval()
    src = save_torch(net.state_dict(), tmp_path / "googleNet.pth")
    port(src, tmp_path / "wz.weights.h5", "googlenet")
    model = keras.build("googlenet", aux_logits=True)
    model.load_weights(str(tmp_path / "wz.weights.h5"))
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        expected = [t.numpy() for t in net(torch.from_numpy(x))]  # logits, aux2, aux1
    for name, want, got in zip(("logits", "aux2", "aux1"), expected, keras.forward(model, x, aux=True), strict=True):
        a = agreement(want, got, logits=True)
        assert a.passed, (name, a)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_other_float_dtypes_are_converted_with_a_notice(tmp_path, dtype):
    state = {
        k: (v.to(getattr(__import__("torch"), dtype)) if v.is_floating_point() else v)
        for k, v in torch_state("googlenet", aux=False).items()
    }
    src = save_torch(state, tmp_path / "wide.pth")
    result = port(src, tmp_path / "w.safetensors", "googlenet")
    assert f"converted 116 {dtype} tensors to float32" in result.notes and result.passed
    assert all(v.dtype == np.float32 for v in canonical.load(tmp_path / "w.safetensors").values())


def test_force_overwrites_only_after_verification(tmp_path, monkeypatch):
    """DST keeps its old bytes while the new file is verified, and takes the new one after."""
    import conformance.formats.port as port_module

    src = save_torch(torch_state("googlenet", aux=False), tmp_path / "a.pth")
    dst = tmp_path / "b.safetensors"
    dst.write_bytes(b"old")
    seen_during_verification = []
    real_verify = port_module.verify

    def verify(*args):
        seen_during_verification.append(dst.read_bytes())
        return real_verify(*args)

    monkeypatch.setattr(port_module, "verify", verify)
    result = port(src, dst, "googlenet", force=True)
    assert seen_during_verification == [b"old"]
    assert result.passed and canonical.load(dst)


def test_cli_prints_the_figures_and_exits_0(tmp_path):
    src = save_torch(torch_state("googlenet", aux=False), tmp_path / "a.pth")
    r = cli("port", str(src), str(tmp_path / "b.npz"), "--variant", "googlenet")
    assert r.returncode == 0, r.stderr
    assert "logits  max abs" in r.stdout and "top-5 100%" in r.stdout and r.stdout.strip().endswith("PASS")


def count_resolving(monkeypatch) -> collections.Counter:
    """A counter of every step that works out what a path is, by step and path: the
    TensorFlow checkpoint probe, the format's inference, the look at its bytes."""
    from conformance.formats import registry, tfcheckpoint

    calls: collections.Counter = collections.Counter()

    def counting(name: str, real):
        def counted(path, *args):
            calls[name, Path(path)] += 1
            return real(path, *args)

        return counted

    for module, name in ((tfcheckpoint, "prefix"), (registry, "format_of"), (registry, "sniff_probed")):
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    return calls


def test_a_port_resolves_each_path_once(tmp_path, monkeypatch):
    """SRC is probed, its format inferred and its bytes looked at once, DST probed and
    inferred once, however many steps take them, even without --variant, where every
    variant's declarations are read. The control: a step that works the source out
    again is counted."""
    src = save_torch(torch_state("googlenet_cifar", aux=False, num_classes=100), tmp_path / "a.pth")
    dst = tmp_path / "b.safetensors"
    calls = count_resolving(monkeypatch)
    result = port(src, dst)
    assert result.passed and result.variant == "googlenet_cifar", result.notes
    assert calls["prefix", src] == calls["format_of", src] == calls["sniff_probed", src] == 1, calls
    assert calls["prefix", dst] == calls["format_of", dst] == 1 and calls["sniff_probed", dst] == 0, calls
    from conformance.formats import registry

    registry.infer(src, None, "--from")  # a step that takes the path and works it out again
    assert calls["prefix", src] == calls["format_of", src] == 2
