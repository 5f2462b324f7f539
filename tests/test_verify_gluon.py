"""``verify`` on Gluon models and saved PyTorch programs. d2l's MXNet GoogLeNet as a
reader types it (``tests/gluon_user_nets.py``) agrees with its own Xavier initialisation,
eager (stages through forward hooks) and hybridized (stages from its graph's internal
outputs), and so does its exported symbol pair alone; the same net with its 3x3 and 5x5
branches concatenated in each other's place is diagnosed as ``branch-order`` (exit 1).
TorchScript and ``.pt2`` files of ``tests/user_nets.py``'s models agree, and a mistaken
one is found. Hostile or wrong files are one line, exit 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import conformance
from conformance import canonical, spec
from conformance.__main__ import main
from conformance.verify import taps_gluon

from .conftest import backend_or_skip, cli

torch = pytest.importorskip("torch")
backend_or_skip("torch")
backend_or_skip("mxnet")

from . import gluon_user_nets, user_nets  # noqa: E402

HERE = Path(__file__).resolve().parent
GLUON_NETS = str(HERE / "gluon_user_nets.py")
FAST = ["--input-size", "96", "--batch", "1"]  # d2l's own size, one image: what every check needs


def _verify(*args: str, capsys) -> tuple[int, str]:
    code = main(["verify", *args, *FAST])
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Gluon Blocks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d2l", "d2l_hybrid"])
def test_d2ls_gluon_net_agrees_eager_and_hybridized(name, capsys):
    code, printed = _verify(f"{GLUON_NETS}:{name}", capsys=capsys)
    assert code == 0, printed
    assert "framework:  gluon (your model)" in printed and "structure (the order your layers are used)" in printed
    assert "not compared" not in printed  # every stage: a child's output, or an internal output of the graph
    assert "googlenet_d2l" in printed and "17 outputs compared" in printed


@pytest.mark.parametrize("name", ["d2l_swapped", "d2l_hybrid_swapped"])
def test_branches_concatenated_in_another_order_are_diagnosed_by_name(name, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, printed = _verify(f"{GLUON_NETS}:{name}", "--json", str(out), capsys=capsys)
    assert code == 1, printed
    doc = json.loads(out.read_text())
    assert doc["framework"] == "gluon" and doc["first_divergence"] == "inception3a"
    assert [d["pitfalls"] for d in doc["diagnosis"]][:1] == [["branch-order"]]
    assert doc["diagnosis"][0]["max_rel"] < 1e-4 and "`branch-order`" in printed


def test_the_api_takes_a_block_and_leaves_it_as_it_was():
    net = gluon_user_nets.d2l()
    gluon_user_nets.nd.waitall()  # the net's first call may still be re-laying its weights (taps_gluon._predicting)
    before = {k: v.data().asnumpy().copy() for k, v in net.collect_params().items()}
    r = conformance.verify(net, input_sizes=[96], batch=1)
    assert r.agree and r.variant == "googlenet_d2l" and r.framework == "gluon"
    assert r.tensors == len(canonical.canonical_shapes(spec.resolve("googlenet_d2l")))
    blocks = [net]
    while blocks:
        b = blocks.pop()
        assert not b._forward_hooks and not b._forward_pre_hooks
        blocks += list(b._children.values())
    changed = [k for k, v in net.collect_params().items() if not np.array_equal(before[k], v.data().asnumpy())]
    assert not changed, changed


def test_weights_are_written_into_a_gluon_block():
    p = spec.resolve("googlenet_d2l")
    params = canonical.random_params(p, seed=5)
    net = gluon_user_nets.d2l_hybrid()
    r = conformance.verify(net, weights=params, input_sizes=[96], batch=1)
    assert r.agree and r.weights == "the canonical parameters given"
    fc = net[5].weight.data().asnumpy()  # Dense keeps (out, in), as the canonical layout does
    assert np.array_equal(fc, params["fc.weight"])


def test_a_gluon_block_without_values_is_one_line():
    """Negative controls: never initialised, and initialised but never run (Gluon's
    deferred shapes: the first conv does not know its input channels)."""
    from mxnet import init

    bare = gluon_user_nets.nn.Sequential()
    bare.add(gluon_user_nets.nn.Conv2D(64, kernel_size=7), gluon_user_nets.nn.Dense(10))
    with pytest.raises(ValueError, match=r"holds no values yet.*net\.initialize"):
        conformance.verify(bare)
    bare.initialize(init=init.Xavier())
    with pytest.raises(ValueError, match="does not know its input channels yet"):
        conformance.verify(bare)


# --------------------------------------------------------------------------------------
# Gluon symbol pairs
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gluon")
    for name in ("d2l_hybrid", "d2l_hybrid_swapped"):
        gluon_user_nets.export(getattr(gluon_user_nets, name)(), str(directory / name))
    return directory


def test_an_exported_symbol_pair_agrees_alone(pairs, capsys):
    code, printed = _verify(str(pairs / "d2l_hybrid-symbol.json"), capsys=capsys)
    assert code == 0, printed
    assert "framework:  gluon" in printed and "not compared" not in printed


def test_an_exported_pair_with_a_mistake_is_diagnosed_by_name(pairs, capsys):
    code, printed = _verify(str(pairs / "d2l_hybrid_swapped-symbol.json"), capsys=capsys)
    assert code == 1, printed
    assert "first divergence: inception3a" in printed and "`branch-order`" in printed


def _pair(tmp_path: Path, pairs: Path, name: str, symbol: bytes | None = None, params: bytes | None = None) -> Path:
    source = pairs / "d2l_hybrid"
    (tmp_path / f"{name}-symbol.json").write_bytes(
        Path(f"{source}-symbol.json").read_bytes() if symbol is None else symbol
    )
    (tmp_path / f"{name}-0000.params").write_bytes(
        Path(f"{source}-0000.params").read_bytes() if params is None else params
    )
    return tmp_path / f"{name}-symbol.json"


def _one_line(path: Path | str, words: str, fresh: bool = False) -> None:
    """Exit 2 with one line holding ``words``: in this process (an exception would
    escape), or ``fresh`` in a new one, as a user runs it."""
    if fresh:
        r = cli("verify", str(path))
        code, err = r.returncode, r.stderr
    else:
        with contextlib.redirect_stderr(io.StringIO()) as stream:
            code = main(["verify", str(path)])
        err = stream.getvalue()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in err, err


def test_a_hostile_or_broken_symbol_pair_is_one_line(pairs, tmp_path):
    text = Path(f"{pairs / 'd2l_hybrid'}-symbol.json").read_text()
    _one_line(_pair(tmp_path, pairs, "cut", symbol=text[: len(text) // 2].encode()), "not JSON", fresh=True)
    graph = json.loads(text)
    graph["nodes"][0]["inputs"] = [[10**6, 0, 0]]
    _one_line(_pair(tmp_path, pairs, "ids", symbol=json.dumps(graph).encode()), "refers to node 1000000")
    graph = json.loads(text)
    graph["nodes"].insert(1, {"op": "_zeros", "name": "big", "attrs": {"shape": "(100000, 100000, 100)"}, "inputs": []})
    _one_line(_pair(tmp_path, pairs, "zeros", symbol=json.dumps(graph).encode()), "'_zeros', an operator")
    _one_line(_pair(tmp_path, pairs, "params", params=b"garbage" * 10), "not an MXNet parameter file")
    header = (0x112).to_bytes(8, "little") + bytes(8) + (10**9).to_bytes(8, "little")  # 10^9 arrays declared
    _one_line(_pair(tmp_path, pairs, "count", params=header), "declares 1,000,000,000 arrays")
    (tmp_path / "alone-symbol.json").write_text(text)
    _one_line(tmp_path / "alone-symbol.json", "alone-0000.params are missing")
    big = tmp_path / "big-symbol.json"
    with open(big, "wb") as f:
        f.truncate(5 << 20)
    (tmp_path / "big-0000.params").write_bytes(b"")
    _one_line(big, "a GoogLeNet's graph is ~150 KB")


@pytest.fixture(scope="session")
def cifar_pair(tmp_path_factory):
    """pytorch-cifar100's net as this suite's ``port --to gluon-export`` writes it: Gluon's
    counter names (``conv0_weight``) follow no scheme, so its BatchNorm units pair by
    structure through the graph."""
    from conformance.formats import deploy

    p = spec.resolve("googlenet_cifar")
    pair, _ = deploy.write_gluon(canonical.random_params(p, seed=1), p)
    directory = tmp_path_factory.mktemp("cifar")
    for ending, data in pair.items():
        (directory / f"cifar{ending}").write_bytes(data)
    return directory / "cifar-symbol.json"


def test_tf_slims_net_as_the_suite_exports_it_pairs_through_its_flipped_kernels(tmp_path):
    """TF-slim's net exported by ``port``: BatchNorm without scale (``fix_gamma``: its
    gamma is not a weight), and each strided conv padded as TensorFlow pads by flipping
    its input, kernel and output (``reverse``): the flipped kernel is still the weight."""
    from conformance.formats import deploy
    from conformance.verify import load

    p = spec.resolve("googlenet_slim")
    pair, _ = deploy.write_gluon(canonical.random_params(p, seed=1), p)
    for ending, data in pair.items():
        (tmp_path / f"slim{ending}").write_bytes(data)
    model = load.load(load.parse(str(tmp_path / "slim-symbol.json")))
    r = conformance.verify(model, variant="googlenet_slim", input_sizes=[224], batch=1, run_diagnosis=False)
    assert r.agree and r.pairing.startswith("structure") and not r.unexposed


def _edited(symbol: Path, tmp_path: Path, name: str, **attrs: str) -> Path:
    """The pair with its first BatchNorm's attributes changed."""
    graph = json.loads(symbol.read_text())
    next(n for n in graph["nodes"] if n["op"] == "BatchNorm")["attrs"].update(attrs)
    (tmp_path / f"{name}-symbol.json").write_text(json.dumps(graph))
    (tmp_path / f"{name}-0000.params").write_bytes(symbol.with_name("cifar-0000.params").read_bytes())
    return tmp_path / f"{name}-symbol.json"


def test_batchnorm_in_a_symbol_pair_pairs_by_structure_and_agrees(cifar_pair, tmp_path):
    from conformance.verify import load

    r = conformance.verify(load.load(load.parse(str(cifar_pair))), input_sizes=[32], batch=1)
    assert r.agree and r.variant == "googlenet_cifar" and r.pairing.startswith("structure") and not r.unexposed
    # negative controls: the first BatchNorm's epsilon changed in the graph disagrees from there;
    # its gamma fixed at 1 (the operator's fix_gamma) is a BatchNorm without scale, which this net lacks
    eps = _edited(cifar_pair, tmp_path, "eps", eps="0.1")
    r = conformance.verify(load.load(load.parse(str(eps))), input_sizes=[32], batch=1, run_diagnosis=False)
    assert not r.agree and r.first_divergence == "conv1"
    fixed = _edited(cifar_pair, tmp_path, "fixed", fix_gamma="True")
    with pytest.raises(ValueError, match="your BatchNorm has no scale"):
        conformance.verify(load.load(load.parse(str(fixed))), variant="googlenet_cifar", input_sizes=[32], batch=1)


def test_batchnorm_in_an_eager_block_pairs_by_structure():
    """The suite's Gluon cifar net inside a user's own Sequential (keys ``0.…``: no
    scheme), run eagerly: BatchNorm's gamma, beta and statistics found through the
    blocks. Negative control: a BatchNorm told to fix its gamma (``scale=False``)."""
    import impl_mxnet

    p = spec.resolve("googlenet_cifar")
    inner = impl_mxnet.build("googlenet_cifar")
    impl_mxnet.from_canonical(inner, canonical.random_params(p, seed=2))
    net = gluon_user_nets.nn.Sequential()
    net.add(inner)
    r = conformance.verify(net, input_sizes=[32], batch=1)
    assert r.agree and r.pairing.startswith("structure") and r.variant == "googlenet_cifar"
    norm = next(b for _, b in taps_gluon._blocks(net) if "running_mean" in b._reg_params)
    norm._kwargs["fix_gamma"] = True
    with pytest.raises(ValueError, match="your BatchNorm has no scale"):
        conformance.verify(net, variant="googlenet_cifar", input_sizes=[32], batch=1)


# --------------------------------------------------------------------------------------
# TorchScript and torch.export
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def programs(tmp_path_factory):
    """d2l's PyTorch net, right and with a mistake, as TorchScript (scripted) and as a
    ``torch.export`` program with its batch and size open."""
    directory = tmp_path_factory.mktemp("programs")
    for name in ("d2l", "d2l_softmax"):
        torch.manual_seed(0)
        torch.jit.script(getattr(user_nets, name)().eval()).save(str(directory / f"{name}.pt"))
    for name in ("d2l", "d2l_no_relu"):
        torch.manual_seed(0)
        model = getattr(user_nets, name)().eval()
        auto = torch.export.Dim.AUTO
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                model, (torch.zeros(2, 1, 96, 96),), dynamic_shapes=({0: auto, 2: auto, 3: auto},)
            )
            torch.export.save(program, str(directory / f"{name}.pt2"))
    return directory


def test_a_torchscript_file_agrees_on_its_logits_its_stages_unseen(programs, capsys):
    code, printed = _verify(str(programs / "d2l.pt"), capsys=capsys)
    assert code == 0, printed
    assert "framework:  torchscript" in printed and "structure (the order your layers are used)" in printed
    assert "1 outputs compared" in printed and "not compared (no module output of its own): conv1," in printed


def test_a_torchscript_file_with_a_mistake_is_diagnosed(programs, capsys):
    code, printed = _verify(str(programs / "d2l_softmax.pt"), capsys=capsys)
    assert code == 1, printed
    assert "first divergence: logits" in printed and "`softmax-output`" in printed


def test_a_pt2_program_is_unflattened_and_agrees_stage_by_stage(programs, capsys):
    code, printed = _verify(str(programs / "d2l.pt2"), capsys=capsys)
    assert code == 0, printed
    assert "framework:  torch" in printed and "not compared" not in printed and "17 outputs compared" in printed


def test_a_pt2_program_with_a_mistake_disagrees_where_it_is_made(programs, capsys):
    code = main(["verify", str(programs / "d2l_no_relu.pt2"), *FAST, "--no-diagnosis"])
    printed = capsys.readouterr().out
    assert code == 1 and "first divergence: inception3a" in printed


def test_a_file_that_is_not_a_program_is_one_line(programs, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    _one_line(weights, "not a TorchScript file", fresh=True)
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a zip" * 10)
    _one_line(garbage, "not a zip file")
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    _one_line(fifo, "not a regular file")
    _one_line(tmp_path / "none.ts", "no such file")


def test_an_archive_beyond_any_googlenet_is_refused_before_torch_reads_it(tmp_path):
    """Negative controls of the bounds: more bytes than the largest variant holds (a
    sparse file: nothing is written), and more files than any GoogLeNet's archive has."""
    import zipfile

    from conformance.verify import load, taps_onnx

    big = tmp_path / "big.pt"
    with open(big, "wb") as f:
        f.truncate(taps_onnx.largest().total + 1)
    with pytest.raises(ValueError, match="more than any GoogLeNet holds"):
        load.load(load.parse(str(big)))
    many = tmp_path / "many.pt2"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(taps_onnx.largest().count + 1100):
            archive.writestr(f"archive/data/{i}", b"")
    with pytest.raises(ValueError, match="its archive holds"):
        load.load(load.parse(str(many)))
