"""Deployment formats in ``port`` (ONNX, TorchScript, ExportedProgram, SavedModel, the
Gluon export pair), each verified in a fresh process without the suite's code; ONNX
and the Gluon pair read back bit for bit; and ``init``, the first checkpoint.

Most run on ``inception_mnist`` (34 tensors, 28 x 28): each export is seconds, not the
minute ``googlenet_bn``'s dynamic-shape ONNX export takes; one test pays that minute
for the aux heads and BatchNorm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import REL_TOL
from conformance.formats import deploy, staging
from conformance.formats.port import PortError, VerificationError, init, port, read_checkpoint
from conformance.formats.registry import FORMATS
from conformance.formats.sniff import sniff

from .conftest import backend_or_skip, cli
from .helpers import seeded_params

VARIANT = "inception_mnist"
# format -> DST name (a directory for the SavedModel)
OUTPUTS = {
    "onnx": "m.onnx",
    "torchscript": "script.pt",
    "exported": "m.pt2",
    "savedmodel": "saved",
    "gluon-export": "m-symbol.json",
}
NEEDS = {
    "onnx": ("torch", "onnx"),
    "torchscript": ("torch",),
    "exported": ("torch",),
    "savedmodel": ("torch", "keras"),
    "gluon-export": ("torch", "mxnet"),
}


def needs(fmt: str) -> None:
    for name in NEEDS[fmt]:
        if name == "onnx":
            pytest.importorskip("onnxruntime")
            pytest.importorskip("onnxscript")
        else:
            backend_or_skip(name)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    backend_or_skip("torch")
    path = tmp_path_factory.mktemp("deploy") / "seeded.safetensors"
    init(path, VARIANT)
    return path


@pytest.fixture(scope="module")
def written(source) -> dict[str, tuple[Path, object, list[str]]]:
    """Each deployment format written once from the seeded checkpoint: (DST, result, log)."""
    out = {}
    for fmt, name in OUTPUTS.items():
        try:
            needs(fmt)
        except pytest.skip.Exception:
            continue
        log: list[str] = []
        dst = source.parent / name
        result = port(source, dst, VARIANT, dst_format=fmt, log=log.append)
        out[fmt] = (dst, result, log)
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_each_deployment_format_is_written_and_verified_in_its_runtime(written, fmt):
    if fmt not in written:
        pytest.skip(f"{fmt}: its framework is not installed")
    dst, result, log = written[fmt]
    assert result.passed and result.dst_format == fmt, log
    a = result.agreement["logits"]
    assert a.max_rel <= REL_TOL and a.top1 == 1.0 and a.top5 == 1.0, a
    assert result.target_framework == deploy.RUNTIMES[{"gluon-export": "gluon"}.get(fmt, fmt)].name
    load = next(line for line in log if line.startswith("load"))
    assert str(dst) in load
    if fmt == "savedmodel":
        assert dst.is_dir() and (dst / "saved_model.pb").is_file()
        assert any("not compared" in line for line in log)
    else:
        assert dst.is_file() and any("bit-identical" in line for line in log)
    if fmt == "gluon-export":
        import mxnet as mx

        assert "arg:conv0_weight" in mx.nd.load(str(deploy.params_of(dst)))  # names of a fresh process
    leftovers = [p.name for p in dst.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers  # staging directories and temporary files are gone


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["onnx", "gluon-export"])
def test_onnx_and_the_gluon_pair_read_back_to_canonical_bit_for_bit(written, fmt):
    if fmt not in written:
        pytest.skip(f"{fmt}: its framework is not installed")
    dst = written[fmt][0]
    back = read_checkpoint(dst, VARIANT)
    expected = seeded_params(VARIANT)
    assert list(back.params) == list(expected)
    assert all(back.params[k].tobytes() == expected[k].tobytes() for k in expected)


@pytest.mark.e2e
def test_the_sniffer_names_deployment_files(written):
    kinds = {"onnx": "onnx", "torchscript": "torchscript", "exported": "exported", "gluon-export": "mxnet-symbol"}
    for fmt, kind in kinds.items():
        if fmt in written:
            assert sniff(written[fmt][0]) == kind


@pytest.mark.e2e
def test_a_torchscript_file_is_not_read_as_a_state_dict(written, tmp_path):
    if "torchscript" not in written:
        pytest.skip("torch is not installed")
    with pytest.raises(PortError, match=r"TorchScript module .*src_format='torchscript'"):
        port(written["torchscript"][0], tmp_path / "x.safetensors", VARIANT)
    with pytest.raises(PortError, match=r"written here, not read; torch.save\(torch.jit.load"):
        port(written["torchscript"][0], tmp_path / "x.safetensors", VARIANT, src_format="torchscript")


# --------------------------------------------------------------------------------------
# Negative controls: a broken deployment file fails
# --------------------------------------------------------------------------------------


def _tampered_writer(monkeypatch, fmt: str, key: str, factor: float) -> None:
    """The format's writer, given weights with one tensor changed: what a lossy exporter
    would write. The verification compares against the untouched source."""
    original = FORMATS[fmt]

    def write(params, p):
        changed = dict(params)
        changed[key] = (params[key] * np.float32(factor)).astype(np.float32)
        return original.write(changed, p)

    import dataclasses

    monkeypatch.setitem(FORMATS, fmt, dataclasses.replace(original, write=write))


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_a_deployment_file_with_a_changed_weight_fails_and_nothing_is_written(source, tmp_path, monkeypatch, fmt):
    needs(fmt)
    _tampered_writer(monkeypatch, fmt, "conv1.weight", 1.01)
    dst = tmp_path / OUTPUTS[fmt]
    log: list[str] = []
    with pytest.raises(VerificationError, match="does not reproduce"):
        port(source, dst, VARIANT, dst_format=fmt, log=log.append)
    assert any("FAIL" in line for line in log), log
    if fmt != "savedmodel":  # the others also compare every tensor by name
        assert any("tensors changed: ['conv1.weight']" in line for line in log), log
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_a_tampered_onnx_initializer_reads_back_as_what_it_holds(written, tmp_path):
    """Reading takes the initializers as they are: a changed one is not the seeded tensor."""
    if "onnx" not in written:
        pytest.skip("onnx is not installed")
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(written["onnx"][0]))
    init_ = next(i for i in model.graph.initializer if i.name == "fc.bias")
    values = numpy_helper.to_array(init_).copy()
    values[0] += np.float32(1e-3)
    init_.CopyFrom(numpy_helper.from_array(values, "fc.bias"))
    path = tmp_path / "tampered.onnx"
    onnx.save(model, str(path))
    back = read_checkpoint(path, VARIANT).params
    expected = seeded_params(VARIANT)
    assert [k for k in expected if back[k].tobytes() != expected[k].tobytes()] == ["fc.bias"]


@pytest.mark.e2e
def test_a_tampered_gluon_pair_reads_back_as_what_it_holds(written, tmp_path):
    if "gluon-export" not in written:
        pytest.skip("mxnet is not installed")
    import mxnet as mx

    dst = written["gluon-export"][0]
    shutil.copy(dst, tmp_path / "t-symbol.json")
    arrays = mx.nd.load(str(deploy.params_of(dst)))
    theirs = {key: name for name, key in deploy.gluon_names(dst, spec.resolve(VARIANT)).items()}
    name = next(k for k in arrays if k.split(":", 1)[-1] == theirs["conv1.weight"])
    arrays[name] = arrays[name] * 1.01
    mx.nd.save(str(tmp_path / "t-0000.params"), arrays)
    back = read_checkpoint(tmp_path / "t-symbol.json", VARIANT).params
    expected = seeded_params(VARIANT)
    assert [k for k in expected if back[k].tobytes() != expected[k].tobytes()] == ["conv1.weight"]


def test_a_gluon_pair_exported_after_other_models_reads_back_bit_for_bit(tmp_path):
    """A user's process that built models before names the parameters conv16_weight, ...:
    reading matches them by position in the graph, not by name."""
    m = backend_or_skip("mxnet")
    m.build(VARIANT)  # shifts MXNet's name counters
    model = m.build(VARIANT)
    m.from_canonical(model, seeded_params(VARIANT))
    pair = m.to_gluon_export(model)
    (tmp_path / "u-symbol.json").write_bytes(pair["symbol.json"])
    (tmp_path / "u-0000.params").write_bytes(pair["params"])
    assert b"conv0_weight" not in pair["symbol.json"]
    back = read_checkpoint(tmp_path / "u-symbol.json", VARIANT).params
    expected = seeded_params(VARIANT)
    assert all(back[k].tobytes() == expected[k].tobytes() for k in expected)


@pytest.mark.e2e
def test_a_gluon_graph_of_another_network_is_refused(written, tmp_path):
    if "gluon-export" not in written:
        pytest.skip("mxnet is not installed")
    dst = written["gluon-export"][0]
    shutil.copy(dst, tmp_path / "r-symbol.json")
    shutil.copy(deploy.params_of(dst), tmp_path / "r-0000.params")
    with pytest.raises(PortError, match=r"its graph is not residual_mnist's as this suite exports it"):
        read_checkpoint(tmp_path / "r-symbol.json", "residual_mnist")


@pytest.mark.e2e
def test_an_onnx_graph_with_batchnorm_folded_is_refused(tmp_path):
    """The ONNX judge's export (optimize=True) folds BatchNorm into the convolutions:
    its weights cannot be separated into canonical ones, and reading says so."""
    needs("onnx")
    t = backend_or_skip("torch")
    p = spec.resolve("googlenet_cifar")
    model = t.build("googlenet_cifar")
    t.from_canonical(model, canonical.random_params(p, 0))
    path = tmp_path / "folded.onnx"
    path.write_bytes(t.to_onnx(model.eval(), (1, 3, 32, 32), False, False))
    with pytest.raises(PortError, match=r"folded into the convolutions.*optimize=False"):
        read_checkpoint(path, "googlenet_cifar")


@pytest.mark.e2e
def test_onnx_carries_the_aux_heads_and_batchnorm_unfolded(tmp_path):
    """googlenet_bn: the ONNX file returns logits, aux2 and aux1, its BatchNorm kept as
    BatchNormalization, and reads back bit for bit (about a minute: the exporter solves
    the pools' sizes symbolically for an open input size)."""
    needs("onnx")
    src = tmp_path / "bn.safetensors"
    init(src, "googlenet_bn", num_classes=10)
    log: list[str] = []
    result = port(src, tmp_path / "bn.onnx", "googlenet_bn", num_classes=10, log=log.append)
    assert result.passed and set(result.agreement) == {"logits", "aux1", "aux2"}, log
    assert all(a.max_rel <= REL_TOL and a.top5 == 1.0 for a in result.agreement.values())
    import onnx

    model = onnx.load(str(tmp_path / "bn.onnx"))
    assert [o.name for o in model.graph.output] == ["logits", "aux2", "aux1"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # batch and size open
    assert "BatchNormalization" in {n.op_type for n in model.graph.node}
    back = read_checkpoint(tmp_path / "bn.onnx", "googlenet_bn", num_classes=10)
    expected = canonical.random_params(spec.resolve("googlenet_bn", 10, True), 0)
    assert list(back.params) == list(expected)
    assert all(back.params[k].tobytes() == expected[k].tobytes() for k in expected)


# --------------------------------------------------------------------------------------
# The fresh process and the outputs that are not single files
# --------------------------------------------------------------------------------------


def test_the_fresh_process_cannot_import_the_suite():
    code = (
        f"import runpy, sys; sys.argv = ['fresh']; m = runpy.run_path({str(deploy.FRESH)!r}); m['_isolate']()\n"
        "for name in ('conformance', 'impl_keras', 'impl_torch', 'impl_mxnet'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        print('blocked', name)\n"
    )
    root = Path(deploy.FRESH).parents[2]  # the suite's root as the working directory
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False, cwd=root)
    suite = ("conformance", "impl_keras", "impl_torch", "impl_mxnet")
    assert done.stdout.split("\n")[:4] == [f"blocked {n}" for n in suite], done.stderr[-500:]


def test_a_savedmodel_never_replaces_an_existing_path(source, tmp_path):
    backend_or_skip("keras")
    existing = tmp_path / "saved"
    existing.mkdir()
    for force in (False, True):
        with pytest.raises(PortError, match=r"already exists \(a directory\).*even with force=True"):
            port(source, existing, VARIANT, dst_format="savedmodel", force=force)
    file = tmp_path / "file"
    file.write_bytes(b"keep")
    with pytest.raises(PortError, match="already exists"):
        port(source, file, VARIANT, dst_format="savedmodel", force=True)
    assert file.read_bytes() == b"keep" and list(existing.iterdir()) == []


def test_a_directory_is_renamed_only_onto_nothing(tmp_path):
    """renameat2(RENAME_NOREPLACE): a DST made meanwhile, even an empty directory (which
    a plain rename replaces), is never replaced."""
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "a").write_bytes(b"1")
    (tmp_path / "dst").mkdir()
    with pytest.raises(PortError, match="appeared meanwhile"):
        staging._rename_new(staged, tmp_path / "dst")
    assert (staged / "a").is_file() and list((tmp_path / "dst").iterdir()) == []
    staging._rename_new(staged, tmp_path / "new")
    assert (tmp_path / "new" / "a").read_bytes() == b"1"


def test_the_gluon_pair_is_named_by_its_symbol_file_and_never_overwrites(source, tmp_path):
    needs("gluon-export")
    with pytest.raises(PortError, match=r"ending in -symbol\.json"):
        port(source, tmp_path / "model.json", VARIANT, dst_format="gluon-export")
    (tmp_path / "m-0000.params").write_bytes(b"keep")
    with pytest.raises(PortError, match=r"m-0000\.params: already exists; pass force=True"):
        port(source, tmp_path / "m-symbol.json", VARIANT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-0000.params"]
    port(source, tmp_path / "m-symbol.json", VARIANT, force=True)
    assert (tmp_path / "m-0000.params").read_bytes() != b"keep"


# --------------------------------------------------------------------------------------
# init: a first checkpoint
# --------------------------------------------------------------------------------------


def test_init_writes_the_seeded_weights_and_refuses_to_overwrite(tmp_path):
    backend_or_skip("torch")
    dst = tmp_path / "first.pth"
    done = cli("init", str(dst), "--variant", VARIANT, "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "random_params(seed=3)" in done.stdout and done.stdout.strip().endswith("PASS")
    back = read_checkpoint(dst, VARIANT).params
    expected = seeded_params(VARIANT, 3)
    assert all(back[k].tobytes() == expected[k].tobytes() for k in expected)
    before = dst.read_bytes()
    again = cli("init", str(dst), "--variant", VARIANT)
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert dst.read_bytes() == before
    forced = cli("init", str(dst), "--variant", VARIANT, "--force")
    assert forced.returncode == 0 and dst.read_bytes() != before  # seed 0 now


def test_init_writes_aux_heads_classes_and_any_format(tmp_path):
    backend_or_skip("mxnet")
    log: list[str] = []
    result = init(tmp_path / "g.params", "googlenet_bn", num_classes=7, log=log.append)
    assert result.passed and set(result.agreement) == {"logits", "aux1", "aux2"}, log
    back = read_checkpoint(tmp_path / "g.params", "googlenet_bn", num_classes=7)
    assert back.plan.aux and back.plan.num_classes == 7
    result = init(tmp_path / "n.params", "googlenet_bn", aux_logits=False)
    assert set(result.agreement) == {"logits"}
    with pytest.raises(PortError, match="has no aux heads"):
        init(tmp_path / "x.params", "googlenet_cifar", aux_logits=True)
    with pytest.raises(PortError, match="variant: unknown 'nope'"):
        init(tmp_path / "x.params", "nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.params", "n.params"]


def test_port_says_what_a_keras_reader_must_import(source, tmp_path):
    backend_or_skip("keras")
    log: list[str] = []
    port(source, tmp_path / "m.keras", VARIANT, log=log.append)
    load = next(line for line in log if line.startswith("load"))
    assert "import impl_keras" in load and "keras.saving.load_model" in load
    # and a fresh process that imports it loads the file
    code = (
        "import impl_keras, keras, sys\n"
        f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
        "print(type(m).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and done.stdout.split()[-1] == "GoogLeNet", done.stderr[-500:]
