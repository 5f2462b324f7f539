"""``verify`` on Keras models written the way users write them (``tests/keras_nets.py``):
d2l's TensorFlow GoogLeNet as the chapter writes it is diagnosed ``same-padding``, the
same net padded as the PyTorch version agrees; a functional net agrees, and with its
branches concatenated in another order is diagnosed ``branch-order``, from a ``.keras``
file alone too; a channels_first model is read in its layout; a truncated model is
refused naming the missing block; hostile or damaged ``.keras`` files are one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import conformance
from conformance import canonical, spec
from conformance.__main__ import main
from conformance.verify import keras_file, load, pairing, taps_keras

from .conftest import backend_or_skip, cli

keras = pytest.importorskip("keras")
backend_or_skip("torch")  # the reference
backend_or_skip("keras")

from . import keras_nets  # noqa: E402

HERE = Path(__file__).resolve().parent
KERAS_NETS = str(HERE / "keras_nets.py")
FAST = ["--input-size", "96", "--batch", "1"]  # d2l's own size; the odd size doubles the time


def _seeded(make, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return make()


# --------------------------------------------------------------------------------------
# d2l's TensorFlow GoogLeNet: a Sequential of Sequentials holding a subclassed block
# --------------------------------------------------------------------------------------


def test_d2l_padded_as_pytorch_agrees_stage_by_stage():
    r = conformance.verify(_seeded(keras_nets.d2l_padded), input_sizes=[96], batch=1)
    assert r.agree and r.variant == "googlenet_d2l" and r.framework == "keras", r
    assert r.pairing.startswith("structure")
    assert r.tensors == len(canonical.canonical_shapes(spec.resolve("googlenet_d2l")))
    # every spec stage is a layer output: the subclassed block's own output included
    assert [s.name for s in r.stages] == [s.name for s in spec.resolve("googlenet_d2l").stages]
    assert next(s for s in r.stages if s.name == "inception3a").module.endswith("/inception")
    assert r.logits.top1 == 1.0 and r.logits.max_rel <= 1e-5


def test_the_chapter_as_written_is_diagnosed_same_padding_and_the_padded_net_passes(tmp_path, capsys):
    out = tmp_path / "d2l.json"
    code = main(["verify", f"{KERAS_NETS}:d2l", *FAST, "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "framework:  keras (your model)" in printed
    assert "first divergence: conv1" in printed and "`same-padding`" in printed
    doc = json.loads(out.read_text())
    assert doc["framework"] == "keras" and doc["agree"] is False and doc["first_divergence"] == "conv1"
    assert [d["pitfalls"] for d in doc["diagnosis"]][:1] == [["same-padding"]]
    assert doc["diagnosis"][0]["max_rel"] < 1e-4
    # the fix: PyTorch's symmetric padding (ZeroPadding2D, then "valid")
    code = main(["verify", f"{KERAS_NETS}:d2l_padded", *FAST])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: your model computes what googlenet_d2l computes" in printed


def test_a_missing_relu_disagrees_from_the_block_where_it_is_missing():
    r = conformance.verify(_seeded(keras_nets.d2l_padded_no_relu), input_sizes=[96], batch=1, run_diagnosis=False)
    assert not r.agree and r.first_divergence == "inception3a"
    assert all(s.passed for s in r.stages if s.name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2"))


def test_a_truncated_network_is_refused_naming_the_missing_block(capsys):
    missing = r"your model has no inception5b: it goes on to `.*dense.*` \(Dense\)"
    with pytest.raises(pairing.PairingError, match=missing):
        conformance.verify(_seeded(keras_nets.d2l_truncated), variant="googlenet_d2l")
    assert main(["verify", f"{KERAS_NETS}:d2l_truncated", "--variant", "googlenet_d2l"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "your model has no inception5b" in err[0]


def test_an_unbuilt_model_is_one_line(capsys):
    assert main(["verify", f"{KERAS_NETS}:d2l_unbuilt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not built" in err[0] and "model.build" in err[0]


def test_ported_weights_are_written_into_the_keras_layouts(tmp_path):
    """Canonical OIHW and (out, in) tensors go in as HWIO and (in, out): the model agrees
    with the reference holding them, and its variables hold them transposed."""
    p = spec.resolve("googlenet_d2l")
    params = canonical.random_params(p, seed=3)
    ckpt = canonical.save(params, tmp_path / "d2l.safetensors", p)
    model = _seeded(keras_nets.d2l_padded)
    r = conformance.verify(model, weights=ckpt, input_sizes=[96], batch=1)
    assert r.agree and r.weights == str(ckpt)
    conv1 = model.layers[0].layers[1]  # b1: ZeroPadding2D, Conv2D, ...
    assert np.array_equal(conv1.kernel.numpy(), params["conv1.conv.weight"].transpose(2, 3, 1, 0))
    assert np.array_equal(model.layers[-1].kernel.numpy(), params["fc.weight"].T)


# --------------------------------------------------------------------------------------
# Functional models, and .keras files
# --------------------------------------------------------------------------------------


def test_a_functional_graph_is_read_depth_first():
    """Keras runs a graph by depth (every branch's first layer, then every branch's
    second): inception3b's branch 1 and branch 2's reduction are both 1x1 256 -> 128, so
    that order cannot tell them apart. Read depth first, each branch's layers follow one
    another."""
    x = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 1, name="a")(x)
    b = keras.layers.Conv2D(4, 1, name="b")(x)
    c = keras.layers.Conv2D(4, 3, padding="same", name="c")(b)
    model = keras.Model(x, keras.layers.Concatenate(name="cat")([a, c]))
    keras_order = [op.name for op in model._operations]
    graph_order = [op.name for op in taps_keras._graph_order(list(model._operations))]
    assert keras_order.index("c") - keras_order.index("b") == 2  # Keras's own: a between b and c
    assert graph_order.index("c") - graph_order.index("b") == 1
    assert graph_order.index("cat") == len(graph_order) - 1


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keras")
    paths = {}
    for name in ("functional", "functional_swapped"):
        paths[name] = directory / f"{name}.keras"
        _seeded(getattr(keras_nets, name)).save(paths[name])
    return paths


def test_a_keras_file_alone_agrees_at_the_one_size_its_input_declares(keras_files, capsys):
    """Its keras.Input is 96 x 96 and refuses 97: the odd size is not run unless asked."""
    code = main(["verify", str(keras_files["functional"]), "--batch", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "framework:  keras (your model)" in printed and "not compared" not in printed
    assert "input 96 x 96" in printed and "input 97 x 97" not in printed
    code = main(["verify", str(keras_files["functional"]), "--batch", "1", "--input-size", "97", "--no-diagnosis"])
    printed = capsys.readouterr().out
    assert code == 1 and "input 97: your model fails: ValueError" in printed, printed


def test_a_keras_file_with_its_branches_out_of_order_is_diagnosed_branch_order(keras_files, capsys):
    code = main(["verify", str(keras_files["functional_swapped"]), *FAST])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "first divergence: inception3a" in printed and "`branch-order`" in printed


def test_a_channels_first_model_is_run_in_its_own_layout():
    model = _seeded(keras_nets.functional_channels_first)
    assert not taps_keras._channels_last(model) and taps_keras.channels(model) == 1
    r = conformance.verify(model, variant="googlenet_d2l", input_sizes=[96], batch=1, run_diagnosis=False)
    assert r.agree, r


def test_a_channels_first_model_where_tensorflow_cannot_convolve_it_is_one_line(monkeypatch):
    """On a CPU where TensorFlow leaves oneDNN off (AMD's), its own kernels refuse NCHW."""
    model = _seeded(keras_nets.functional_channels_first)
    monkeypatch.setattr(taps_keras, "_convolves_channels_last_only", lambda: True)
    with pytest.raises(ValueError, match=r"^MODEL: your Keras model is channels_first, .* TF_ENABLE_ONEDNN_OPTS=1"):
        conformance.verify(model, variant="googlenet_d2l", input_sizes=[96], batch=1, run_diagnosis=False)


# --------------------------------------------------------------------------------------
# Hostile and damaged .keras files
# --------------------------------------------------------------------------------------


def _rewritten(source: Path, target: Path, config: bytes | None = None, weights: bytes | None = None) -> Path:
    """``source`` with its config.json or weights replaced."""
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w") as out:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename == "config.json" and config is not None:
                data = config
            if info.filename == keras_file.WEIGHTS and weights is not None:
                data = weights
            out.writestr(info.filename, data)
    return target


def _config(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def _one_line(capsys, args: list[str]) -> str:
    assert main(["verify", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_truncated_keras_file_is_one_line(keras_files, tmp_path, capsys):
    cut = tmp_path / "cut.keras"
    cut.write_bytes(keras_files["functional"].read_bytes()[:100_000])
    assert "damaged Keras model archive" in _one_line(capsys, [str(cut)])


def test_a_corrupt_member_is_refused_by_its_crc(keras_files, tmp_path, capsys):
    data = bytearray(keras_files["functional"].read_bytes())
    with zipfile.ZipFile(keras_files["functional"]) as z:
        info = z.getinfo(keras_file.WEIGHTS)
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5000  # inside the stored weights
    data[at] ^= 0xFF
    bad = tmp_path / "flipped.keras"
    bad.write_bytes(bytes(data))
    line = _one_line(capsys, [str(bad)])
    assert "crc" in line.lower() or "damaged" in line, line


def test_a_class_from_the_users_code_is_refused_before_keras_runs_it(keras_files, tmp_path, capsys):
    config = _config(keras_files["functional"])
    layer = next(x for x in config["config"]["layers"] if x["class_name"] == "Conv2D")
    layer["module"], layer["class_name"] = "__main__", "Inception"
    bad = _rewritten(keras_files["functional"], tmp_path / "custom.keras", json.dumps(config).encode())
    line = _one_line(capsys, [str(bad)])
    assert "class 'Inception' of module '__main__'" in line and "path/to/file.py:callable" in line


def test_a_lambda_layer_is_refused(keras_files, tmp_path, capsys):
    config = _config(keras_files["functional"])
    layer = next(x for x in config["config"]["layers"] if x["class_name"] == "GlobalAveragePooling2D")
    layer["class_name"] = "Lambda"
    bad = _rewritten(keras_files["functional"], tmp_path / "lambda.keras", json.dumps(config).encode())
    assert "a Lambda layer" in _one_line(capsys, [str(bad)])


def test_an_oversized_config_and_oversized_weights_are_refused(keras_files, tmp_path, capsys):
    big = _rewritten(keras_files["functional"], tmp_path / "big.keras", b" " * (keras_file.MAX_CONFIG + 1))
    assert "config.json declares" in _one_line(capsys, [str(big)])
    h5py = pytest.importorskip("h5py")
    weights = tmp_path / "huge.h5"
    with h5py.File(weights, "w") as f:  # declared huge, stored nearly empty (chunked, never written)
        f.create_dataset("layers/dense/vars/0", shape=(1 << 16, 1 << 14), dtype="float32", chunks=(64, 64))
    huge = _rewritten(keras_files["functional"], tmp_path / "huge.keras", weights=weights.read_bytes())
    assert "no tensor of this network needs more than" in _one_line(capsys, [str(huge)])


def test_a_deeply_nested_config_is_one_line(keras_files, tmp_path, capsys):
    deep = _rewritten(keras_files["functional"], tmp_path / "deep.keras", b"[" * 100_000 + b"]" * 100_000)
    assert "nests deeper" in _one_line(capsys, [str(deep)])
    nested: dict = {"class_name": "Functional", "module": "keras", "config": {}}
    for _ in range(100):
        nested = {"class_name": "Sequential", "module": "keras", "config": {"layers": [nested]}}
    deep = _rewritten(keras_files["functional"], tmp_path / "deep2.keras", json.dumps(nested).encode())
    assert "nests more than 64 levels deep" in _one_line(capsys, [str(deep)])


def test_bad_keras_paths_are_one_line_in_a_fresh_process(tmp_path):
    """No traceback, before any framework runs the file."""
    not_zip = tmp_path / "text.keras"
    not_zip.write_text("hello")
    for args, words in (
        (["missing.keras"], "MODEL missing.keras: no such file"),
        ([str(tmp_path)], "a directory without a saved_model.pb"),  # refused, not run
        ([str(not_zip)], "not a Keras model archive"),
    ):
        r = cli("verify", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_load_returns_a_keras_model_object_as_it_is():
    """``module:callable`` naming a model object (not a factory) is taken as it is."""
    model = _seeded(keras_nets.d2l_padded)
    keras_nets.built = model  # type: ignore[attr-defined]
    try:
        source = load.parse("tests.keras_nets:built")
        assert taps_keras.is_model(load.load(source))
    finally:
        del keras_nets.built  # type: ignore[attr-defined]


def test_a_dense_layer_reading_a_flattened_nhwc_map_is_read_in_pytorchs_order():
    """Keras flattens (H, W, C), PyTorch (C, H, W): a dense layer after a Flatten of a map
    larger than 1 x 1 (the aux heads' fc1) gets its canonical rows in (C, H, W) order, so
    it computes on the NCHW flatten what it computes in Keras, and is written back so."""
    inputs = keras.Input((2, 3, 4))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).standard_normal((1, 4, 2, 3)).astype(np.float32)  # NCHW
    (dense,) = taps_keras.layers(model, x)
    theirs = model(x.transpose(0, 2, 3, 1)).numpy()
    ours = x.reshape(1, -1) @ dense.tensors["weight"].T + dense.tensors["bias"]
    assert np.allclose(ours, theirs, atol=1e-5)
    unpermuted = x.reshape(1, -1) @ model.layers[-1].kernel.numpy() + dense.tensors["bias"]
    assert not np.allclose(unpermuted, theirs, atol=1e-2)  # the control: Keras's own rows do not
    weight = np.random.default_rng(1).standard_normal((5, 24)).astype(np.float32)
    taps_keras.load(model, {"fc.weight": dense.keys["weight"]}, {"fc.weight": weight})
    assert np.array_equal(taps_keras.state(model)[dense.keys["weight"]], weight)
    assert np.allclose(model(x.transpose(0, 2, 3, 1)).numpy(), x.reshape(1, -1) @ weight.T + dense.tensors["bias"])


def test_the_wrapped_calls_are_removed_and_a_layers_own_call_is_given_back():
    inputs = keras.Input((2, 3, 4))
    flatten = keras.layers.Flatten()
    model = keras.Model(inputs, keras.layers.Dense(5)(flatten(inputs)))

    def own_call(x):  # a call set on the instance, as the pitfall catalogue sets one
        return keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))

    flatten.call = own_call
    x = np.zeros((1, 4, 2, 3), np.float32)
    taps_keras.run(model, x, {(1, 4, 2, 3)}, set())
    taps_keras.layers(model, x)
    assert flatten.__dict__["call"] is own_call
    assert all("call" not in layer.__dict__ for layer in model.layers if layer is not flatten)
