"""Each model used as its framework's users use it, outside the suite's interface:
Keras's summary, plot_model, compile/fit/evaluate and .keras files in a fresh process;
PyTorch's torch.export, torch.compile, torch.jit.trace and torch.jit.script; Gluon's
hybridize, export and a SymbolBlock reloading the export, and training hybridized. Every output is
compared with the model's own eager forward at the suite's tolerance."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import REL_TOL, agreement
from conformance.check.inputs import full_options
from conformance.spec import without_dropout
from conformance.train.data import prepare, synthetic

from .conftest import ROOT, backend_or_skip, full_plan, loaded_model


def images(p: spec.Plan, n: int, size: int | None = None, seed: int = 0) -> np.ndarray:
    size = size or p.input_size
    return np.random.default_rng(seed).standard_normal((n, p.in_channels, size, size)).astype(np.float32)


def assert_agrees(reference: np.ndarray, got: np.ndarray) -> None:
    a = agreement(np.asarray(reference), np.asarray(got))
    assert a.passed and a.max_rel <= REL_TOL, a


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------


def keras_model(variant: str, **options):
    backend_or_skip("keras")
    import impl_keras

    return impl_keras.build(variant, **options)


def summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


def test_keras_summary_shows_every_stage_with_its_shape(monkeypatch):
    backend_or_skip("keras")
    monkeypatch.setenv("COLUMNS", "160")  # the width rich renders the table at
    from impl_keras import GoogLeNet

    p = full_plan("googlenet_bn")
    text = summary(GoogLeNet(p, image_shape=(224, 224, 3)))
    for stage, (c, h, w) in spec.stage_shapes(p, 224).items():
        assert re.search(rf"^│ {re.escape(stage)} \(\w+\)\s+│ \(None, {h}, {w}, {c}\)", text, re.M), stage
    for head in ("aux1", "aux2", "fc"):
        assert re.search(rf"^│ {head} \(\w+\)\s+│ \(None, 1000\)", text, re.M), head
    assert "?" not in text
    # the model build() returns runs at any size: its H and W are open, its channels known
    open_size = summary(keras_model("googlenet_bn"))
    assert re.search(r"^│ inception5b \(Inception\)\s+│ \(None, None, None, 1024\)", open_size, re.M)


def test_keras_plot_model_writes_a_png(tmp_path):
    keras_model("inception_mnist")
    import keras

    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed: apt-get install -y graphviz")
    try:
        import pydot  # noqa: F401
    except ImportError:
        pytest.skip("pydot is not installed: pip install pydot (part of the keras extra)")
    from impl_keras import GoogLeNet

    path = tmp_path / "googlenet.png"
    keras.utils.plot_model(GoogLeNet(full_plan("googlenet"), image_shape=(224, 224, 3)), str(path), show_shapes=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_keras_compile_fit_evaluate_with_the_aux_heads():
    """One epoch on generated data: a loss per output, the aux heads weighted 0.3."""
    model = keras_model("googlenet_bn", num_classes=10, aux_logits=True)
    import keras

    data = synthetic(n_train=8, n_test=0, classes=10)["train"]
    x, y = prepare(data.images, 3, 64).transpose(0, 2, 3, 1), data.labels
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss={"logits": ce, "aux2": ce, "aux1": ce},
        loss_weights={"logits": 1.0, "aux2": 0.3, "aux1": 0.3},
        metrics={"logits": ["accuracy"]},
    )
    labels = {"logits": y, "aux2": y, "aux1": y}
    history = model.fit(x, labels, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "logits_accuracy" in history
    got = model.evaluate(x, labels, batch_size=len(x), verbose=0, return_dict=True)
    weighted = got["logits_loss"] + 0.3 * (got["aux1_loss"] + got["aux2_loss"])
    assert got["loss"] == pytest.approx(weighted, rel=1e-5)


def test_keras_fit_without_aux_heads_takes_the_labels_as_they_are():
    model = keras_model("inception_mnist")
    import keras

    data = synthetic(n_train=16, n_test=0, classes=10)["train"]
    x = prepare(data.images, 1, 28).transpose(0, 2, 3, 1)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, data.labels, batch_size=8, epochs=1, verbose=0)
    loss, accuracy = model.evaluate(x, data.labels, verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_keras_file_loads_in_a_fresh_process(tmp_path):
    """A .keras file needs only ``import impl_keras`` in the reader's process."""
    b = backend_or_skip("keras")
    model = loaded_model(b, "googlenet_bn")
    x = images(model.plan, 2, 97)
    path = tmp_path / "googlenet.keras"
    model.save(str(path))
    code = (
        "import sys, numpy as np, keras, impl_keras\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "out = m(np.load(sys.argv[2]).transpose(0, 2, 3, 1))\n"
        "np.save(sys.argv[3], np.asarray(out['logits'])); print(type(m).__name__, m.name)\n"
    )
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-2:] == ["GoogLeNet", "googlenet_bn"]
    assert_agrees(b.forward(model, x), np.load(tmp_path / "y.npy"))


@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet_cifar"])
def test_keras_graph_of_open_size_matches_eager_at_every_size(variant):
    """The pools pad from the input's size, a tensor in a graph traced with H and W open
    (as ``model.export`` traces one): ceil and floor rounding, adaptive windows, aux heads."""
    b = backend_or_skip("keras")
    import tensorflow as tf

    model = loaded_model(b, variant)
    p = model.plan
    graph = tf.function(
        lambda x: model.forward_stages(x, with_aux=bool(p.aux)),
        input_signature=[tf.TensorSpec((None, None, None, p.in_channels))],
    )
    for size in (p.input_size, 97, 239):
        if not spec.aux_admits(p, size):
            continue
        x = images(p, 2, size).transpose(0, 2, 3, 1)
        eager, traced = model.forward_stages(x, with_aux=bool(p.aux)), graph(x)
        for stage in eager:
            assert_agrees(eager[stage], traced[stage])


@pytest.mark.parametrize(
    "pool",
    [
        spec.Pool("p", "max", 3, 2, padding=1, ceil_mode=True),
        spec.Pool("p", "avg", 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        spec.Pool("p", "avg", 3, 2, padding=1, ceil_mode=True, count_include_pad=True),
        spec.Pool("p", "avg", 5, 3),
    ],
    ids=["max-ceil", "avg-ceil-exclude-pad", "avg-ceil-include-pad", "avg-5-3"],
)
def test_keras_pool_of_open_size_matches_pytorch(pool):
    backend_or_skip("keras"), backend_or_skip("torch")
    import tensorflow as tf
    import torch

    from impl_keras.layers import Pool2D
    from impl_torch.layers import make_pool

    layer = Pool2D(pool)
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4))])
    for size in (7, 8, 13):
        x = np.random.default_rng(size).standard_normal((2, 4, size, size + 1)).astype(np.float32)
        expected = make_pool(pool)(torch.from_numpy(x)).numpy()
        got = np.asarray(graph(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
        assert got.shape == expected.shape
        assert_agrees(expected, got)


def test_keras_stages_are_named_outputs_of_the_graph():
    b = backend_or_skip("keras")
    import keras

    model = loaded_model(b, "googlenet_bn")
    features = keras.Model(model.input, {name: model.get_layer(name).output for name in ("inception4e", "avgpool")})
    x = images(model.plan, 2, 97)
    got = features(x.transpose(0, 2, 3, 1))
    stages = b.stages(model, x)
    assert_agrees(stages["inception4e"], np.asarray(got["inception4e"]).transpose(0, 3, 1, 2))
    assert_agrees(stages["flatten"], np.asarray(got["avgpool"]).reshape(2, -1))


def test_keras_layers_that_fill_gaps_are_registered_and_round_trip_their_config():
    backend_or_skip("keras")
    import keras

    from impl_keras.layers import AdaptiveAvgPool2D, BatchNorm, LocalResponseNorm, Pool2D

    layers = [
        Pool2D(spec.Pool("maxpool1", "max", 3, 2, ceil_mode=True)),
        AdaptiveAvgPool2D(spec.AdaptiveAvgPool("aux1.pool", 4)),
        LocalResponseNorm(spec.LRN("lrn1")),
        BatchNorm(epsilon=1e-3, momentum=0.9, name="conv1.bn"),
    ]
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 8)).astype(np.float32)
    for layer in layers:
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(copy) is type(layer) and copy.name == layer.name
        if not isinstance(layer, BatchNorm):  # no weights: the same op
            np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(copy(x)))


# --------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------


def torch_model(variant: str):
    b = backend_or_skip("torch")
    return b, loaded_model(b, variant)


def eager(model, x, train: bool = False):
    import torch

    model.train(train)
    try:
        with torch.no_grad():
            return model(torch.from_numpy(x))
    finally:
        model.eval()


# BatchNorm, the input transform, aux heads, the adaptive pool; LRN; plain convs; residual
# blocks and Liu's classifier ``l``
@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet_lrn", "inception_mnist", "residual_mnist"])
def test_torch_jit_script_compiles_the_model(variant):
    import torch

    _, model = torch_model(variant)
    scripted = torch.jit.script(model)
    assert list(scripted.state_dict()) == list(model.state_dict())  # the canonical keys
    x = images(model.plan, 2)
    with torch.no_grad():
        assert_agrees(eager(model, x), scripted(torch.from_numpy(x)))
        stages = model.forward_stages(torch.from_numpy(x), with_aux=bool(model.plan.aux))
        scripted_stages = scripted.forward_stages(torch.from_numpy(x), with_aux=bool(model.plan.aux))
    assert list(scripted_stages) == list(stages)
    for stage in stages:
        assert_agrees(stages[stage], scripted_stages[stage])


def test_torch_jit_script_returns_the_aux_logits_in_training():
    import torch

    _, model = torch_model("googlenet_bn")
    scripted = torch.jit.script(model)
    x = images(model.plan, 2, 97)
    scripted.train()
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            got = scripted(torch.from_numpy(x))
            torch.manual_seed(0)
            expected = eager(model, x, train=True)
    finally:
        scripted.eval()
    assert isinstance(got, tuple) and len(got) == 3
    for e, g in zip(expected, got, strict=True):
        assert_agrees(e, g)


def test_torch_export_with_the_aux_heads_and_an_open_size():
    import torch

    _, model = torch_model("googlenet_bn")
    x = images(model.plan, 2)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    program = torch.export.export(model, (torch.from_numpy(x),), dynamic_shapes={"x": dims})
    assert set(program.state_dict) == set(model.state_dict())  # the canonical keys
    for size in (97, 239):  # traced at 224
        y = images(model.plan, 3, size, seed=size)
        with torch.no_grad():
            assert_agrees(eager(model, y), program.module()(torch.from_numpy(y)))


def test_torch_compile_captures_one_graph():
    """``fullgraph=True``: a graph break would raise. (aot_eager: Dynamo's capture and
    AOTAutograd, without Inductor's minutes of code generation on two cores.)"""
    import torch

    for variant in ("googlenet_bn", "inception_mnist"):
        _, model = torch_model(variant)
        x = images(model.plan, 2)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            assert_agrees(eager(model, x), compiled(torch.from_numpy(x)))


def test_torch_jit_trace():
    import torch

    _, model = torch_model("googlenet_bn")
    x = images(model.plan, 2)
    traced = torch.jit.trace(model, (torch.from_numpy(x),))
    with torch.no_grad():
        assert_agrees(eager(model, x), traced(torch.from_numpy(x)))


# --------------------------------------------------------------------------------------
# MXNet Gluon
# --------------------------------------------------------------------------------------


def fresh_gluon(variant: str, dtype: str = "float32", **options):
    b = backend_or_skip("mxnet")
    p = spec.resolve(variant, **(options or full_options(spec.VARIANTS[variant])))
    model = b.build(p.variant, **p.options.asdict(), dtype=dtype)
    b.from_canonical(model, canonical.random_params(p, 0))
    return b, model


@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet_lrn", "inception_mnist"])
def test_gluon_export_reloads_into_a_symbolblock_without_a_warning(variant, tmp_path):
    b, model = fresh_gluon(variant)
    import mxnet as mx

    x = images(model.plan, 2)
    expected = b.forward(model, x)
    model.hybridize()
    assert_agrees(expected, model(mx.nd.array(x)).asnumpy())
    model.export(str(tmp_path / variant))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the input's dtype given: MXNet has nothing to warn about
        data = mx.sym.var("data", dtype="float32")
        imported = mx.gluon.SymbolBlock(mx.sym.load(str(tmp_path / f"{variant}-symbol.json")), data)
        imported.collect_params().load(str(tmp_path / f"{variant}-0000.params"))
    assert_agrees(expected, imported(mx.nd.array(x)).asnumpy())


def test_gluon_hybridized_graph_follows_the_training_mode():
    """Traced once, the graph would keep the mode of its first call; it is traced per mode:
    aux logits in training only, as torchvision's, and export refuses a training graph."""
    _, model = fresh_gluon("googlenet_bn")
    import mxnet as mx

    x = mx.nd.array(images(model.plan, 2, 97))
    model.hybridize()
    assert isinstance(model(x), mx.nd.NDArray)
    with mx.autograd.record():
        assert len(model(x)) == 3
    with pytest.raises(RuntimeError, match=r"run a forward outside autograd\.record"):
        model.export("never-written")
    assert isinstance(model(x), mx.nd.NDArray)


def test_gluon_silences_only_the_aux_heads_unused_warning():
    _, model = fresh_gluon("googlenet_bn")
    import mxnet as mx

    x = mx.nd.array(images(model.plan, 1, 97))
    model.hybridize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
    assert not [w for w in caught if "is not used by any computation" in str(w.message)]
    # a parameter no computation uses that is not an aux head's still warns
    model.spare = mx.gluon.nn.Dense(3, in_units=2)
    model.spare.initialize()
    model.hybridize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
    unused = [str(w.message) for w in caught if "is not used by any computation" in str(w.message)]
    assert len(unused) == 1 and "dense" in unused[0]


def _trained(backend, p: spec.Plan, params, x: np.ndarray, y: np.ndarray, **options) -> dict[str, np.ndarray]:
    """The weights after two SGD steps in float64, as ``check --train`` takes them."""
    model = backend.build(p.variant, **p.options.asdict(), dtype="float64")
    backend.from_canonical(model, params)
    trainer = backend.Trainer(model, lr=0.01, momentum=0.9, **options)
    for _ in range(2):
        trainer.step(x, y)
    return backend.to_canonical(model)


@pytest.mark.parametrize("variant", ["googlenet_cifar", "googlenet_lrn"])
def test_gluon_trains_hybridized_as_pytorch(variant, monkeypatch):
    """Hybridized, in float64 as ``check --train``: two SGD steps give PyTorch's weights and
    running statistics (BatchNorm's unbiased running variance; LRN, aux heads and their
    0.3 loss weight in the graph). Gluon's stock BatchNorm update does not."""
    t, m = backend_or_skip("torch"), backend_or_skip("mxnet")
    p = spec.resolve(without_dropout(spec.variant(variant)), **full_options(spec.VARIANTS[variant]))
    params = canonical.random_params(p, 0, training=True)
    x, y = images(p, 2).astype(np.float64), np.array([3, 7])
    reference = _trained(t, p, params, x, y)
    hybridized = _trained(m, p, params, x, y, hybridize=True)
    assert max(agreement(reference[k], hybridized[k]).max_rel for k in reference) <= REL_TOL
    if p.variant.convs.norm is None:
        return
    import mxnet as mx

    import impl_mxnet.layers

    monkeypatch.setattr(impl_mxnet.layers.BatchNorm, "hybrid_forward", mx.gluon.nn.BatchNorm.hybrid_forward)
    stock = _trained(m, p, params, x, y, hybridize=True)
    running = [k for k in reference if k.endswith("running_var")]
    assert max(agreement(reference[k], stock[k]).max_rel for k in running) > 100 * REL_TOL


def test_the_docs_way_to_import_mxnet_directly_works():
    """A bare ``import mxnet`` fails on numpy 1.24 and later; the docs' snippet, run
    as it stands in a fresh process, imports it."""
    backend_or_skip("mxnet")
    page = (ROOT / "docs" / "frameworks.md").read_text()
    snippet = re.search(r"To use MXNet\s+without the suite, restore it first:\n\n```python\n(.*?)```", page, re.S)
    assert snippet, "the docs' MXNet import snippet (docs/frameworks.md)"
    code = snippet.group(1) + "print(mxnet.__version__)\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "1.9.1", run.stderr[-1000:]
