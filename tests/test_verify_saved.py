"""``verify`` on SavedModel directories: the suite's own Keras reference saved with
``tf.saved_model.save`` agrees stage by stage; a user's functional net exported with
``model.export`` agrees, and with its branches concatenated in another order is
diagnosed ``branch-order`` from the directory alone; d2l's chapter as written (``same``
padding) is diagnosed ``same-padding``; hostile and broken directories are one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conformance import canonical, spec
from conformance.__main__ import main
from conformance.verify import taps_saved

from .conftest import backend_or_skip

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
backend_or_skip("torch")  # the reference
backend_or_skip("keras")

from . import keras_nets  # noqa: E402

FAST = ["--input-size", "96", "--batch", "1"]


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    import impl_keras
    from impl_keras.weights import from_canonical

    directory = tmp_path_factory.mktemp("saved")
    paths = {}
    plan = spec.resolve("googlenet_cifar")
    reference = impl_keras.build("googlenet_cifar")
    from_canonical(reference, canonical.random_params(plan, seed=1))  # BatchNorm statistics drawn, not 0 and 1
    paths["reference"] = directory / "reference"
    tf.saved_model.save(reference, str(paths["reference"]))
    for name in ("functional", "functional_swapped", "d2l"):
        keras.utils.set_random_seed(0)
        paths[name] = directory / name
        getattr(keras_nets, name)().export(str(paths[name]))
    return paths


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    return code, capsys.readouterr().out


def test_the_suites_own_reference_saved_agrees_stage_by_stage(saved, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, printed = _run(capsys, str(saved["reference"]), "--batch", "1", "--json", str(out))
    assert code == 0, printed
    doc = json.loads(out.read_text())
    assert doc["variant"] == "googlenet_cifar" and doc["framework"] == "savedmodel" and doc["agree"]
    assert [s["name"] for s in doc["stages"] if s["size"] == 32] == [
        s.name for s in spec.resolve("googlenet_cifar").stages
    ]
    assert doc["sizes"] == [32, 33] and not doc["unexposed"]


def test_an_exported_functional_net_agrees_and_its_swapped_branches_are_named(saved, capsys):
    code, printed = _run(capsys, str(saved["functional"]), "--batch", "1")
    assert code == 0, printed
    assert "input 96 x 96" in printed and "input 97" not in printed  # the signature fixes 96 x 96
    code, printed = _run(capsys, str(saved["functional_swapped"]), *FAST)
    assert code == 1, printed
    assert "first divergence: inception3a" in printed and "`branch-order`" in printed


def test_the_chapter_as_written_is_diagnosed_same_padding(saved, capsys):
    code, printed = _run(capsys, str(saved["d2l"]), *FAST)
    assert code == 1, printed
    assert "first divergence: conv1" in printed and "`same-padding`" in printed


def test_ported_weights_are_written_into_the_variables(saved, tmp_path):
    """Canonical OIHW and (out, in) go in as HWIO and (in, out): the model then agrees
    with the reference holding them (its own random weights would agree too, so the
    control is that the variables now hold the checkpoint)."""
    import conformance
    from conformance.verify import load

    plan = spec.resolve("googlenet_d2l")
    params = canonical.random_params(plan, seed=5)
    ckpt = canonical.save(params, tmp_path / "d2l.safetensors", plan)
    model = load.load(load.parse(str(saved["functional"])))
    before = taps_saved.state(model)
    result = conformance.verify(model, weights=ckpt, batch=1)
    assert result.agree and result.weights == str(ckpt)
    after = taps_saved.state(model)
    changed = [k for k in after if not (after[k] == before[k]).all()]
    assert len(changed) == len(after)
    conv1 = next(k for k, v in after.items() if v.shape == params["conv1.conv.weight"].shape)
    assert (after[conv1] == params["conv1.conv.weight"]).all()


# --------------------------------------------------------------------------------------
# Hostile and broken directories
# --------------------------------------------------------------------------------------


def _copy(source: Path, target: Path) -> Path:
    for path in sorted(source.rglob("*")):
        inner = target / path.relative_to(source)
        if path.is_dir():
            inner.mkdir(parents=True, exist_ok=True)
        else:
            inner.parent.mkdir(parents=True, exist_ok=True)
            inner.write_bytes(path.read_bytes())
    return target


def _one_line(capsys, path: Path) -> str:
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_directory_without_a_graph_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "without a saved_model.pb" in _one_line(capsys, tmp_path / "empty")


def test_a_symlink_inside_is_refused(saved, tmp_path, capsys):
    bad = _copy(saved["functional"], tmp_path / "linked")
    (bad / "assets" / "secret").symlink_to("/etc/passwd")
    line = _one_line(capsys, bad)
    assert "assets/secret is a symlink" in line, line
    link = tmp_path / "link"
    link.symlink_to(saved["functional"])
    assert "a symlink" in _one_line(capsys, link)


def test_a_fifo_inside_is_refused(saved, tmp_path, capsys):
    bad = _copy(saved["functional"], tmp_path / "fifo")
    os.mkfifo(bad / "variables" / "pipe")
    assert "a FIFO" in _one_line(capsys, bad)


def test_an_oversized_directory_is_refused_before_tensorflow_reads_it(saved, tmp_path, capsys):
    bad = _copy(saved["functional"], tmp_path / "big")
    with open(bad / "variables" / "variables.data-00000-of-00001", "r+b") as f:
        f.truncate(taps_saved.largest_file() + taps_saved.MAX_GRAPH + 1)  # sparse: declared, never written
    assert "bytes, more than a SavedModel of this network needs" in _one_line(capsys, bad)


def test_a_damaged_graph_is_one_line(saved, tmp_path, capsys):
    bad = _copy(saved["functional"], tmp_path / "cut")
    graph = bad / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[:5000])
    assert "TensorFlow cannot load it as a SavedModel" in _one_line(capsys, bad)
