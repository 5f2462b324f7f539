"""``python -m conformance diff``: where two models part. A checkpoint with one block's
weights perturbed is named at that block; identical ones exit 0; bad input gets
``port``'s own messages."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.__main__ import main
from conformance.teach import diff
from conformance.teach.pitfalls import PITFALLS

from .conftest import backend_or_skip, cli, save_torch, torch_state

SIZE, BATCH = 97, 2  # small and odd: every stage still runs


def saved(tmp_path, name: str, params, p) -> str:
    path = tmp_path / name
    canonical.save(params, path, p)
    return str(path)


@pytest.fixture(scope="module")
def plan():
    return spec.resolve("googlenet", aux_logits=True)


@pytest.mark.parametrize("key", ["inception4c.branch2.1.conv.weight", "conv2.conv.bias", "conv1.conv.weight"])
def test_one_perturbed_block_is_named_as_the_first_divergence(tmp_path, plan, key):
    backend_or_skip("torch")
    params = canonical.random_params(plan, 0)
    a = saved(tmp_path, "a.safetensors", params, plan)
    params[key] = params[key] * np.float32(1.01)
    b = saved(tmp_path, "b.safetensors", params, plan)
    r = diff.diff(a, b, "googlenet", size=SIZE, batch=BATCH)
    block = key.split(".")[0]
    assert not r.passed and r.first is not None and r.first.stage == block
    assert all(row.passed for row in r.rows[: r.rows.index(r.first)])
    assert [t.key for t in r.tensors] == [key] and 0.0099 < r.tensors[0].max_rel < 0.0101


def test_the_command_names_the_block_and_exits_1(tmp_path, plan):
    backend_or_skip("torch")
    params = canonical.random_params(plan, 0)
    a = saved(tmp_path, "a.safetensors", params, plan)
    params["inception4c.branch3.1.conv.weight"] = params["inception4c.branch3.1.conv.weight"] * np.float32(0.98)
    b = saved(tmp_path, "b.safetensors", params, plan)
    r = cli("diff", a, b, "--variant", "googlenet", "--input-size", str(SIZE), "--batch", str(BATCH))
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if "<- first divergence" in line)
    assert line.split()[0] == "inception4c"
    assert "FAIL: they part at inception4c" in r.stdout
    assert "inception4c.branch3.1.conv.weight" in r.stdout.split("tensors that differ most")[1]


def test_identical_checkpoints_in_two_formats_exit_0(tmp_path):
    backend_or_skip("torch")
    state = torch_state("googlenet_bn")
    pth = save_torch(state, tmp_path / "a.pth")
    p = spec.resolve("googlenet_bn", aux_logits=True)
    same = saved(tmp_path, "b.safetensors", canonical.from_state_dict(state), p)
    r = cli("diff", str(pth), same, "--variant", "googlenet_bn", "--input-size", str(SIZE), "--batch", str(BATCH))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tensors: all bit-identical" in r.stdout and "PASS: the two agree within 1e-04 at every stage" in r.stdout
    assert "dropped 59 num_batches_tracked counters" in r.stdout  # read as port reads it


def test_against_the_seeded_weights(tmp_path, plan):
    backend_or_skip("torch")
    params = canonical.random_params(plan, 3)
    a = saved(tmp_path, "a.safetensors", params, plan)
    same = diff.diff(a, None, "googlenet", size=SIZE, batch=BATCH, seed=3)
    assert same.passed and same.b.label == "seeded weights (seed 3)" and not same.tensors
    other = diff.diff(a, None, "googlenet", size=SIZE, batch=BATCH, seed=0)
    assert other.first is not None and other.first.stage == "conv1"


def test_only_one_side_with_aux_heads_is_compared_without(tmp_path, plan):
    backend_or_skip("torch")
    params = canonical.random_params(plan, 0)
    a = saved(tmp_path, "a.safetensors", params, plan)
    trunk = spec.resolve("googlenet")
    b = saved(tmp_path, "b.safetensors", {k: v for k, v in params.items() if not k.startswith("aux")}, trunk)
    r = diff.diff(a, b, "googlenet", size=224, batch=1)
    assert r.passed and r.notes == [f"aux heads: only {a} has them; compared without"]
    assert "aux1" not in [row.stage for row in r.rows]


def test_one_checkpoint_in_two_frameworks(tmp_path):
    """What check does, for a user's file; with a broken Keras adapter, the first conv
    parts and the tensors Keras holds after loading show the transposed kernels."""
    backend_or_skip("torch"), backend_or_skip("keras")
    p = spec.resolve("googlenet")
    a = saved(tmp_path, "a.safetensors", canonical.random_params(p, 0), p)
    r = diff.diff(a, None, "googlenet", pair=["torch", "keras"], size=SIZE, batch=BATCH)
    assert r.passed and not r.tensors and (r.a.framework, r.b.framework) == ("torch", "keras")
    with PITFALLS["kernel-transposed"].broken(backend_or_skip("keras")):
        r = diff.diff(a, None, "googlenet", pair=["torch", "keras"], size=SIZE, batch=BATCH)
    assert r.first is not None and r.first.stage == "conv1"
    assert r.tensors[0].key.endswith("conv.weight") and all(t.key.endswith("conv.weight") for t in r.tensors)
    text = diff.render(r)
    assert text.startswith(f"diff {a} in torch vs keras") and "FAIL: they part at conv1" in text


def _port_and_diff_errors(capsys, tmp_path, src: str, *options: str) -> tuple[str, str]:
    assert main(["port", src, str(tmp_path / "out.npz"), *options]) == 2
    port_err = capsys.readouterr().err
    assert main(["diff", src, *options]) == 2
    diff_err = capsys.readouterr().err
    return port_err, diff_err


def _bad_files(tmp_path):
    """(file, options, what port says) for one bad input of each kind."""
    state = torch_state("googlenet", aux=False)
    missing = dict(state)
    del missing["inception4b.branch2.1.conv.bias"]
    p = spec.resolve("googlenet")
    (tmp_path / "empty.pth").write_bytes(b"")
    canonical.save(canonical.random_params(p, 0), tmp_path / "real.safetensors", p)
    os.rename(tmp_path / "real.safetensors", tmp_path / "looks.pth")
    (tmp_path / "a.bin").write_bytes(b"x")
    return [
        (save_torch(missing, tmp_path / "missing.pth"), ["--variant", "googlenet"], "missing key"),
        (save_torch(state, tmp_path / "other.pth"), ["--variant", "googlenet_bn"], "not `googlenet_bn`"),
        (
            save_torch(state, tmp_path / "classes.pth"),
            ["--variant", "googlenet", "--num-classes", "10"],
            "1000 classes",
        ),
        (tmp_path / "empty.pth", ["--variant", "googlenet"], "the file is empty"),
        (tmp_path / "looks.pth", ["--variant", "googlenet"], "but the file is safetensors"),
        (tmp_path / "a.bin", ["--variant", "googlenet"], "cannot tell the format from the name"),
    ]


def test_bad_input_gets_the_same_message_as_port(tmp_path, capsys):
    backend_or_skip("torch")
    for path, options, message in _bad_files(tmp_path):
        port_err, diff_err = _port_and_diff_errors(capsys, tmp_path, str(path), *options)
        assert message in port_err and diff_err == port_err, (path, port_err, diff_err)
        assert not (tmp_path / "out.npz").exists()
    good = str(save_torch(torch_state("googlenet", aux=False), tmp_path / "good.pth"))
    for path, options, message in _bad_files(tmp_path)[:2]:  # as B too
        assert main(["diff", good, str(path), *options]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["none.pth", "--variant", "googlenet"], "error: A none.pth: no such file"),
        (["good", "none.pth", "--variant", "googlenet"], "error: B none.pth: no such file"),
        (["good", "good", "--frameworks", "torch,keras", "--variant", "googlenet"], "give A only, not B"),
        (
            ["good", "--frameworks", "torch,keras,mxnet", "--variant", "googlenet"],
            "--frameworks: expected one framework (A and B run in it) or two (A runs in each)",
        ),
        (
            ["good", "--frameworks", "torch,onnx", "--variant", "googlenet"],
            "--frameworks: onnx: not a conformance backend",
        ),
        (["good", "--frameworks", "torch,no-such", "--variant", "googlenet"], "--frameworks: unknown ['no-such']"),
        (["good", "--variant", "googlenet", "--input-size", "20"], "--input-size 20: input size 20"),
        (["good", "--variant", "googlenet", "--from-b", "torch"], "--from-b: there is no B"),
        (["good"], "the following arguments are required: --variant"),
    ],
)
def test_bad_options_exit_2_with_one_message(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # none.pth: no such file here
    args = [str(tmp_path / "good.pth") if a == "good" else a for a in args]
    backend_or_skip("torch")
    save_torch(torch_state("googlenet", aux=False), tmp_path / "good.pth")
    with pytest.raises(SystemExit) if "required" in message else contextlib.nullcontext():
        assert main(["diff", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_aux_heads_that_branch_off_before_the_divergence_are_not_counted_after_it(tmp_path, plan):
    """inception4e parts; aux1 (from inception4a) and aux2 (from inception4d) never see
    it, so "from there on" counts the trunk alone. The negative control: parting at
    inception4a, aux1 and aux2 both read it and are counted."""
    backend_or_skip("torch")
    for key, downstream in (("inception4e.branch1.conv.weight", 6), ("inception4a.branch1.conv.weight", 12)):
        params = canonical.random_params(plan, 0)
        block = key.split(".")[0]
        a = saved(tmp_path, f"{block}-a.safetensors", params, plan)
        params[key] = params[key] * np.float32(1.05)
        b = saved(tmp_path, f"{block}-b.safetensors", params, plan)
        r = diff.diff(a, b, "googlenet", size=224, batch=1)
        assert {"aux1", "aux2"} <= {row.stage for row in r.rows}
        assert f"of the {downstream} stages from there on differ" in diff.render(r)
