"""``verify``: a user's own GoogLeNet against the reference of its variant. The sources'
own networks and user-style models (``tests/user_nets.py``: plain ``nn.Module`` code)
agree; a numeric mistake is found at its stage (exit 1); a model of another variant,
a truncated one and one with an extra layer are refused naming the first mismatch
(exit 2); bad input is one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import conformance
from conformance import canonical, spec
from conformance.__main__ import main
from conformance.verify import pairing

from .conftest import backend_or_skip, cli

torch = pytest.importorskip("torch")
backend_or_skip("torch")

from . import source_nets, user_nets, wzmiaomiao_googlenet  # noqa: E402

HERE = Path(__file__).resolve().parent
USER_NETS = str(HERE / "user_nets.py")


def _seeded(make, seed: int = 0):
    torch.manual_seed(seed)
    return make()


@pytest.fixture(scope="session")
def d2l_result():
    return conformance.verify(_seeded(user_nets.d2l), batch=1)


# --------------------------------------------------------------------------------------
# Models that agree
# --------------------------------------------------------------------------------------


def test_a_d2l_net_in_its_own_names_pairs_by_structure_and_agrees(d2l_result):
    r = d2l_result
    assert r.variant == "googlenet_d2l" and r.framework == "torch"
    assert r.agree and r.first_divergence is None and r.diagnosis == []
    assert r.pairing.startswith("structure") and r.tensors == len(
        canonical.canonical_shapes(spec.resolve("googlenet_d2l"))
    )
    assert r.sizes == [96, 97]  # its own size and the nearest odd size check runs
    # every stage of the spec is exposed by a module of d2l's Sequential, at both sizes
    assert [s.name for s in r.stages if s.size == 96] == [s.name for s in spec.resolve("googlenet_d2l").stages]
    assert {s.module for s in r.stages if s.name == "inception3a"} == {"2.0"}
    assert r.logits.top1 == 1.0 and r.logits.top5 == 1.0 and r.logits.max_rel <= 1e-4


def test_branches_computed_in_another_order_still_pair_and_agree():
    r = conformance.verify(_seeded(user_nets.d2l_swapped), variant="googlenet_d2l", input_sizes=[96], batch=1)
    assert r.agree and r.pairing.startswith("structure")


@pytest.mark.parametrize("net", [source_nets.InceptionNet, source_nets.ResidualNet])
def test_the_lecture_nets_agree_with_their_own_initialisation(net):
    r = conformance.verify(_seeded(net))
    assert r.agree, r
    assert r.variant == {"InceptionNet": "inception_mnist", "ResidualNet": "residual_mnist"}[net.__name__]
    assert r.pairing.startswith("names")
    assert r.unexposed == ["relu1", "relu2"]  # F.relu in forward: no module output to compare


def test_pytorch_cifar100s_net_agrees():
    r = conformance.verify(_seeded(source_nets.CifarGoogleNet), batch=1)
    assert r.agree and r.variant == "googlenet_cifar" and r.pairing == "names (pytorch-cifar100's GoogleNet)"
    assert r.sizes == [32, 33]


@pytest.fixture(scope="session")
def wzmiaomiao_result():
    model = _seeded(wzmiaomiao_googlenet.GoogLeNet)
    model.train()
    result = conformance.verify(model, batch=1, input_sizes=[224])
    return model, result


def test_wzmiaomiaos_net_agrees_and_auto_picks_the_variant_whose_outputs_agree(wzmiaomiao_result):
    _, r = wzmiaomiao_result
    assert r.agree and r.variant == "googlenet"
    assert r.also_fits == ["googlenet_lrn"]  # the same tensors: Caffe's net adds LRN, which has none
    assert {o.name for o in r.outputs} == {"logits", "aux1", "aux2"}  # it returns its aux logits in eval too
    # its ReLUs are in place: each stage was copied when made, or conv1 would not agree
    assert next(s for s in r.stages if s.name == "conv1").passed


def test_verify_leaves_the_model_as_it_was(wzmiaomiao_result):
    model, _ = wzmiaomiao_result
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_same_model_against_the_variant_it_is_not_disagrees(wzmiaomiao_result):
    """Negative control of auto's choice: googlenet_lrn has the same tensors, and LRN."""
    model, _ = wzmiaomiao_result
    r = conformance.verify(model, variant="googlenet_lrn", batch=1, input_sizes=[224], run_diagnosis=False)
    assert not r.agree
    assert r.unexposed == ["lrn1", "lrn2"]
    # after the missing LRN (at PyTorch's initial scale LRN is nearly the identity: it shows a few stages on)
    assert r.first_divergence not in (None, "conv1", "maxpool1")


# --------------------------------------------------------------------------------------
# Ported weights
# --------------------------------------------------------------------------------------


def test_ported_weights_are_written_into_a_structurally_paired_model(tmp_path):
    p = spec.resolve("googlenet_d2l")
    params = canonical.random_params(p, seed=3)
    ckpt = canonical.save(params, tmp_path / "d2l.safetensors", p)
    model = _seeded(user_nets.d2l)
    r = conformance.verify(model, weights=ckpt, input_sizes=[96], batch=1)
    assert r.agree and r.weights == str(ckpt)
    # the tensors went where the structure says: d2l's b3[0] is inception3a, p3_2 its 5x5
    assert np.array_equal(model[2][0].p3_2.weight.detach().numpy(), params["inception3a.branch3.1.conv.weight"])
    assert np.array_equal(model[5].bias.detach().numpy(), params["fc.bias"])


def test_ported_weights_in_torchvision_names_load_into_wzmiaomiaos_net(tmp_path):
    p = spec.resolve("googlenet", aux_logits=True)
    params = canonical.random_params(p, seed=5)
    path = tmp_path / "googleNet.pth"
    torch.save({k: torch.from_numpy(v) for k, v in params.items()}, path)
    model = _seeded(wzmiaomiao_googlenet.GoogLeNet)
    r = conformance.verify(model, variant="googlenet", weights=path, input_sizes=[224], batch=1)
    assert r.agree
    assert np.array_equal(
        model.inception4e.branch3[1].conv.weight.detach().numpy(), params["inception4e.branch3.1.conv.weight"]
    )


# --------------------------------------------------------------------------------------
# Mistakes
# --------------------------------------------------------------------------------------


def test_a_missing_relu_disagrees_from_the_block_where_it_is_missing():
    r = conformance.verify(_seeded(user_nets.d2l_no_relu), input_sizes=[96], batch=1, run_diagnosis=False)
    assert not r.agree and r.first_divergence == "inception3a"
    assert all(s.passed for s in r.stages if s.name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2"))
    assert not next(o for o in r.outputs if o.name == "logits").passed


def test_a_model_of_another_variant_is_refused_naming_the_unit_and_both_kernels():
    with pytest.raises(pairing.PairingError) as e:
        conformance.verify(_seeded(user_nets.d2l_3x3), variant="googlenet_d2l")
    assert str(e.value) == (
        "googlenet_d2l: inception3a branch 3 (inception3a.branch3.1): your kernel is 3 x 3, d2l's is 5 x 5"
    )


def test_auto_names_the_closest_variant_and_its_first_mismatch():
    with pytest.raises(
        pairing.PairingError, match=r"closest: googlenet_d2l: inception3a branch 3 .*3 x 3, d2l's is 5 x 5"
    ):
        conformance.verify(_seeded(user_nets.d2l_3x3))


def test_an_extra_layer_is_refused_as_one_the_variant_lacks():
    with pytest.raises(
        pairing.PairingError, match=r"a layer googlenet_d2l lacks: `1.5` \(Conv2d\): conv 1 x 1, 192 -> 192"
    ):
        conformance.verify(_seeded(user_nets.d2l_extra), variant="googlenet_d2l")


def test_a_truncated_network_is_refused_naming_the_missing_block():
    with pytest.raises(pairing.PairingError, match=r"your model has no inception5b: it goes on to `5` \(Linear\)"):
        conformance.verify(_seeded(user_nets.d2l_truncated), variant="googlenet_d2l")


def test_a_torchvision_style_kernel_against_the_paper_names_torchvisions_variant():
    conv = {"weight": np.zeros((32, 16, 3, 3), np.float32)}
    norm = {k: np.ones(32, np.float32) for k in pairing.NORM_ROLES}
    layers = [
        pairing.Layer("b.conv", pairing.CONV, conv, {"weight": "b.conv.weight"}),
        pairing.Layer("b.bn", pairing.NORM, norm, {k: f"b.bn.{k}" for k in norm}),
    ]
    p = spec.resolve("googlenet")
    unit = next(u for u in p.units() if u.name == "inception3a.branch3.1")
    g = pairing._groups(layers)[0]
    assert pairing._mismatch(unit, g, p) == "your kernel is 3 x 3, the paper's is 5 x 5"
    assert pairing._another(p, g, unit) == "; torchvision's variant is `googlenet_bn`"


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def test_the_command_exits_0_and_writes_the_json(tmp_path, capsys):
    out = tmp_path / "verify.json"
    code = main(["verify", f"{USER_NETS}:d2l", "--input-size", "96", "--batch", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: your model computes what googlenet_d2l computes" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    doc = json.loads(out.read_text())
    assert doc["variant"] == "googlenet_d2l" and doc["framework"] == "torch" and doc["agree"] is True
    assert doc["first_divergence"] is None and doc["diagnosis"] == []
    assert set(doc["logits"]) == {"max_abs", "max_rel", "top1", "top5"}
    assert {"name", "max_abs", "max_rel", "passed"} <= set(doc["stages"][0])
    # never replaced without --force
    assert main(["verify", f"{USER_NETS}:d2l", "--input-size", "96", "--json", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_command_exits_1_on_a_numeric_mistake(capsys):
    code = main(["verify", f"{USER_NETS}:d2l_no_relu", "--input-size", "96", "--batch", "1", "--no-diagnosis"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "first divergence: inception3a" in printed and "FAIL:" in printed


def test_the_command_names_a_catalogue_mistake_and_the_fixed_model_passes(tmp_path, capsys):
    """A tutorial's net with softmax left in its output: exit 1, named by the diagnosis
    in the text and the JSON; the same net without it is the PASS case above."""
    out = tmp_path / "softmax.json"
    code = main(["verify", f"{USER_NETS}:d2l_softmax", "--input-size", "96", "--batch", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "first divergence: logits" in printed and "`softmax-output`" in printed
    diagnosis = json.loads(out.read_text())["diagnosis"]
    assert [d["pitfalls"] for d in diagnosis][:1] == [["softmax-output"]] and diagnosis[0]["max_rel"] < 1e-4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tests/nothing_here.py:build"], "no such file"),
        (["no such module:build"], "neither a module name"),
        (["model.keras"], "MODEL model.keras: no such file"),
        (["model.pt2"], "MODEL model.pt2: no such file"),
        (["model.pth"], "a file of weights, not a model"),
        (["model.onnx"], "MODEL model.onnx: no such file"),
        (["tests/user_nets.py:d2l", "--variant", "googlenet", "--input-size", "5"], "--input-size 5"),
        (["tests/user_nets.py:d2l", "--batch", "100"], "--batch"),
        (["tests/user_nets.py:d2l", "--weights", "missing.pth"], "--weights missing.pth: no such file"),
        (["tests/user_nets.py:d2l", "--weights", "tests/user_nets.py"], "cannot tell the format"),
    ],
)
def test_bad_input_is_one_line_before_anything_is_imported(args, words):
    r = cli("verify", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr


def test_a_user_module_that_is_missing_or_fails_is_one_line(capsys):
    assert main(["verify", f"{USER_NETS}:nope"]) == 2
    assert "has no 'nope'" in capsys.readouterr().err
    assert main(["verify", "conformance.no_such_module:build"]) == 2
    assert "importing conformance.no_such_module failed: ModuleNotFoundError" in capsys.readouterr().err


def test_a_refused_model_exits_2_with_the_mismatch(capsys):
    assert main(["verify", f"{USER_NETS}:d2l_extra", "--variant", "googlenet_d2l"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a layer googlenet_d2l lacks" in err[0]


def test_a_diagnosis_is_rendered_within_100_columns(d2l_result):
    """The words of a finding (the diagnosis itself is diagnose.py's, tested there)."""
    import dataclasses

    from conformance.verify import report, verifying

    finding = verifying.DiagnosisResult(("floor-pooling", "missing-relu"), 3e-7, ("maxpool1", "inception3a"))
    failed = dataclasses.replace(d2l_result, agree=False, first_divergence="maxpool1", diagnosis=[finding])
    text = report.render(failed, "a/very/long/path/" * 10 + "model.py:build")
    words = " ".join(text.split())
    assert "computes with `floor-pooling` and `missing-relu` (logits agree to 3e-07 with those mistakes" in words
    assert "made at maxpool1 and inception3a)" in words
    assert max(map(len, text.splitlines())) <= 100
    doc = report.to_json(failed)
    assert doc["diagnosis"] == [
        {"pitfalls": ["floor-pooling", "missing-relu"], "max_rel": 3e-7, "where": ["maxpool1", "inception3a"]}
    ]


# --------------------------------------------------------------------------------------
# ONNX files
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory):
    """d2l's net and the one without its ReLU, exported by the user with torch's
    TorchScript exporter: initializers named by module path (``0.0.weight``)."""
    pytest.importorskip("onnxruntime")
    import warnings

    directory = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name in ("d2l", "d2l_no_relu"):
        model = _seeded(getattr(user_nets, name)).eval()
        paths[name] = directory / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, 1, 96, 96),),
                str(paths[name]),
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
            )
    return paths


@pytest.mark.e2e
def test_an_onnx_file_pairs_by_node_order_and_agrees_stage_by_stage(onnx_files, capsys):
    code = main(["verify", str(onnx_files["d2l"]), "--input-size", "96", "--batch", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "framework:  onnx (your model)" in printed and "structure (the order your layers are used)" in printed
    assert "inception3a   /2/2.0/Concat" in printed  # an intermediate tensor, added as a graph output
    assert "not compared" not in printed


@pytest.mark.e2e
def test_an_onnx_file_with_a_mistake_disagrees_where_it_is_made(onnx_files, capsys):
    code = main(["verify", str(onnx_files["d2l_no_relu"]), "--input-size", "96", "--batch", "1", "--no-diagnosis"])
    printed = capsys.readouterr().out
    assert code == 1 and "first divergence: inception3a" in printed


@pytest.mark.e2e
def test_weights_are_written_into_an_onnx_graphs_initializers(onnx_files, tmp_path):
    from onnx import numpy_helper

    from conformance.verify import load

    p = spec.resolve("googlenet_d2l")
    params = canonical.random_params(p, seed=7)
    ckpt = canonical.save(params, tmp_path / "d2l.safetensors", p)
    model = load.load(load.parse(str(onnx_files["d2l"])))
    r = conformance.verify(model, weights=ckpt, input_sizes=[96], batch=1)
    assert r.agree and r.framework == "onnx"
    fc = {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}["5.weight"]
    assert np.array_equal(fc, params["fc.weight"])  # Gemm keeps (out, in) with transB


def test_a_damaged_onnx_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    r = cli("verify", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a readable ONNX file" in r.stderr


# --------------------------------------------------------------------------------------
# BatchNorm, paired by structure
# --------------------------------------------------------------------------------------


def _wrapped_cifar(eps: float | None = None):
    """pytorch-cifar100's net inside a user's own container: its keys (``0.prelayer...``)
    follow no known scheme, so each conv and the BatchNorm after it pair by structure.
    ``eps``: the stem's first BatchNorm epsilon changed (a mistake)."""
    net = _seeded(source_nets.CifarGoogleNet)
    if eps is not None:
        net.prelayer[1].eps = eps
    return torch.nn.Sequential(net)


def test_batchnorm_units_pair_by_structure_and_agree():
    r = conformance.verify(_wrapped_cifar(), input_sizes=[32], batch=1)
    assert r.agree and r.variant == "googlenet_cifar" and r.pairing.startswith("structure")
    assert r.tensors == len(canonical.canonical_shapes(spec.resolve("googlenet_cifar")))


def test_a_batchnorm_epsilon_changed_in_one_layer_disagrees_from_that_layer():
    r = conformance.verify(_wrapped_cifar(eps=1e-1), input_sizes=[32], batch=1, run_diagnosis=False)
    assert not r.agree and r.first_divergence == "conv1"
