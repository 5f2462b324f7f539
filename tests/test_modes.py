"""Each framework's fast inference mode (its default) against its eager mode: the same
numbers, compiled once per shape, no change to the model or to eager training; and the
negative control, a fast path that folds BatchNorm into the conv with the wrong epsilon."""

from __future__ import annotations

import copy
import gc
import logging
import types
import weakref

import numpy as np
import pytest

from conformance import canonical, interface, spec
from conformance.check import harness
from conformance.check.compare import REL_TOL, agreement

from .conftest import backend_or_skip, eager_only, full_plan, loaded_model, patched
from .helpers import random_images


def test_the_default_is_a_fast_mode_and_eager_is_there(backend):
    assert backend.MODES[0] != interface.EAGER and interface.EAGER in backend.MODES
    assert len(set(backend.MODES)) == len(backend.MODES)


def test_the_default_mode_gives_eager_stages_and_logits(backend):
    """The compiled extras after eager are checked below at a small size (each of their
    first calls compiles for seconds to a minute)."""
    model = loaded_model(backend, "googlenet_bn")
    x = random_images(1, 97)
    eager = backend.stages(model, x, mode=interface.EAGER)
    for mode in backend.MODES[:1]:
        fast = backend.stages(model, x, mode=mode)
        assert list(fast) == list(eager)
        worst = max(agreement(eager[k], fast[k]).max_rel for k in eager)
        assert worst <= REL_TOL, (mode, worst)
        logits, aux2, aux1 = backend.forward(model, x, aux=True, mode=mode)
        for name, got in (("logits", logits), ("aux2", aux2), ("aux1", aux1)):
            assert agreement(eager[name], got, logits=True).passed, (mode, name)


@pytest.mark.parametrize("framework,mode", [("keras", "xla"), ("mxnet", "onednn")])
def test_a_compiled_extra_gives_eager_stages_and_logits(framework, mode):
    """XLA and oneDNN fusion agree with eager at every stage, at two batch sizes (XLA and
    the oneDNN partition compile per shape) and after new weights are loaded. torch's
    compile is checked once, through the harness, below."""
    b = backend_or_skip(framework)
    model = loaded_model(b, "googlenet_cifar")
    for batch in (2, 3):
        x = random_images(batch, 32)
        eager = b.stages(model, x, mode=interface.EAGER)
        fast = b.stages(model, x, mode=mode)
        assert list(fast) == list(eager)
        assert max(agreement(eager[k], fast[k]).max_rel for k in eager) <= REL_TOL, batch
    fresh = b.build("googlenet_cifar")
    b.from_canonical(fresh, canonical.random_params(fresh.plan, 1))
    x = random_images(2, 32)
    b.forward(fresh, x, mode=mode)
    b.from_canonical(fresh, canonical.random_params(fresh.plan, 2))
    assert agreement(b.forward(fresh, x, mode=interface.EAGER), b.forward(fresh, x, mode=mode), logits=True).passed


def test_mxnet_onednn_fuses_or_says_it_cannot(monkeypatch):
    """The partitioned graph holds oneDNN's fused operators: a backend name MXNet does
    not know would leave the graph as it was (only logged), which is refused, not run as
    the hybrid mode under another name."""
    mxnet_ = backend_or_skip("mxnet")
    model = mxnet_.build("inception_mnist")
    x = random_images(2, 28, channels=1)
    mxnet_.forward(model, x, mode="onednn")
    (fused,) = [v for k, v in interface._COMPILED[model].items() if k[0] == "onednn"]
    assert any(op.startswith("_sg_mkldnn_conv") for op in mxnet_._operators(fused.block._cached_graph[1]))
    monkeypatch.setattr(mxnet_, "ONEDNN_BACKEND", "NO_SUCH_BACKEND")
    with pytest.raises(interface.Unsupported, match="fused no operator"):
        mxnet_.forward(mxnet_.build("inception_mnist"), x, mode="onednn")


def test_mxnet_graphs_run_relu_as_a_onednn_activation():
    """The hybrid and oneDNN graphs run ReLU as ``Activation`` (oneDNN runs it in its own
    layout, and its backend fuses it into the convolution before it), not as the model's
    ``relu``, which has no oneDNN kernel; the model's own graph keeps ``relu``."""
    mxnet_ = backend_or_skip("mxnet")
    model = mxnet_.build("googlenet_bn")
    x = random_images(1, 97)
    graphs = {}
    for mode in ("hybrid", "onednn"):
        mxnet_.forward(model, x, mode=mode)
        (graphs[mode],) = [v for k, v in interface._COMPILED[model].items() if k[0] == mode]
    hybrid = mxnet_._operators(graphs["hybrid"].block._cached_graph[1])
    assert "relu" not in hybrid and "Activation" in hybrid
    fused = mxnet_._operators(graphs["onednn"].block._cached_graph[1])
    assert "relu" not in fused and "Activation" not in fused  # each one fused into its conv
    assert "relu" in mxnet_._operators(model.forward_stages(mxnet_.mx.sym.var("data"))["logits"])


@pytest.mark.parametrize("eps,agrees", [(None, True), (1e-5, False)], ids=["own epsilon", "Gluon's default 1e-5"])
def test_torch_fast_modes_run_every_batchnorm_folded_into_its_conv(monkeypatch, eps, agrees):
    """The copy the channels-last and compile modes run has no BatchNorm left (one pass
    over each map, as in ONNX Runtime's graph) and agrees with eager; the model keeps
    its own. Folded with another epsilon than the BatchNorm's, it fails."""
    torch_ = backend_or_skip("torch")
    if eps is not None:
        real = torch_._fold_batchnorm

        def wrong(net):
            for unit in net.modules():
                if isinstance(unit, torch_.torch.nn.BatchNorm2d):
                    unit.eps = eps
            real(net)

        monkeypatch.setattr(torch_, "_fold_batchnorm", wrong)
    model = torch_.build("googlenet_bn")
    torch_.from_canonical(model, canonical.random_params(model.plan, 1))
    x = random_images(1, 97)
    eager = torch_.stages(model, x, mode=interface.EAGER)
    fast = torch_.stages(model, x)
    assert (max(agreement(eager[k], fast[k]).max_rel for k in eager) <= REL_TOL) == agrees
    copy = interface._COMPILED[model]["channels_last"].model
    assert not any(isinstance(m, torch_.torch.nn.BatchNorm2d) for m in copy.modules())
    assert any(isinstance(m, torch_.torch.nn.BatchNorm2d) for m in model.modules())


def _wrong_epsilon(keras_, monkeypatch, eps: float) -> None:
    """Keras's fold, given each BatchNorm's statistics with ``eps`` for its own epsilon."""
    real = keras_.layers.fold_batchnorm

    def wrong(conv, bn):
        stats = {k: getattr(bn, k) for k in ("moving_mean", "moving_variance", "gamma", "beta")}
        return real(conv, types.SimpleNamespace(**stats, epsilon=eps))

    monkeypatch.setattr(keras_.layers, "fold_batchnorm", wrong)


def _multiplied_maps(graph) -> int:
    """Products of a traced graph on maps of the batch (BatchNorm's scale runs as one on
    every map; the fold multiplies only kernels)."""
    return sum(
        op.type == "Mul" and op.outputs[0].shape.rank == 4 and op.outputs[0].shape[0] is None
        for op in graph.get_operations()
    )


@pytest.mark.parametrize("eps,agrees", [(None, True), (1e-3, False)], ids=["own epsilon", "Keras's default 1e-3"])
def test_keras_graph_runs_every_batchnorm_folded_into_its_conv(monkeypatch, eps, agrees):
    """The graph mode traces each conv and its BatchNorm as one conv, folded from the
    variables (one product on the maps fewer per BatchNorm than the same outputs traced
    without the fold), and agrees with eager. Folded with another epsilon, it fails.
    googlenet_cifar: its convs have a bias, and some BatchNorms an epsilon of 16 or 32."""
    keras_ = backend_or_skip("keras")
    if eps is not None:
        _wrong_epsilon(keras_, monkeypatch, eps)
    model = keras_.build("googlenet_cifar")
    keras_.from_canonical(model, canonical.random_params(model.plan, 1))
    x = random_images(1, 33)
    eager = keras_.stages(model, x, mode=interface.EAGER)
    fast = keras_.stages(model, x, mode="graph")
    assert (max(agreement(eager[k], fast[k]).max_rel for k in eager) <= REL_TOL) == agrees
    (graph,) = [v for k, v in interface._COMPILED[model].items() if k[0] == "graph"]
    folded = _multiplied_maps(graph.get_concrete_function().graph)
    spec_ = keras_.tf.TensorSpec((None, 3, None, None), keras_.tf.float32)
    unfolded = keras_.tf.function(lambda x: keras_._outputs(model, x, False, True), autograph=False)
    batchnorms = sum(v.name == "moving_variance" for v in model.non_trainable_variables)
    assert batchnorms > 50 and _multiplied_maps(unfolded.get_concrete_function(spec_).graph) == folded + batchnorms


@pytest.mark.e2e  # XLA compiles the network; the quick control: test_keras_graph_runs_every_batchnorm_folded...
def test_a_keras_fold_with_the_wrong_epsilon_fails_the_check(monkeypatch):
    """Through the harness, as ``check --modes all`` runs it: the graph and xla modes,
    folded with Keras's default eps 1e-3 instead of the BatchNorm's own (1e-5, or the
    branch width), fail from the first conv on, while eager, which keeps the BatchNorm,
    agrees with PyTorch."""
    keras_, torch_ = backend_or_skip("keras"), backend_or_skip("torch")
    _wrong_epsilon(keras_, monkeypatch, 1e-3)
    backends = {**eager_only({"torch": torch_}), "keras": keras_}  # torch's compile is not what this tests
    report = harness.run(["googlenet_cifar"], backends, {}, sizes=[33], batch=1, modes="all")
    size = report.variants[0].sizes[0]
    rows = {r.stage: r for r in size.modes}
    assert all(r.passed for r in size.stages) and not report.passed
    for mode in ("graph", "xla"):
        assert rows["conv1"].agreement[f"keras {mode}"].max_rel > 100 * REL_TOL, mode
        assert not rows["logits"].agreement[f"keras {mode}"].passed, mode


def test_keras_fold_rounds_as_float64_would_to_within_an_ulp():
    """The folded kernel and bias against the same fold in float64 with numpy, rounded
    once: the kernel's product in float32 adds at most one rounding of the scale."""
    keras_ = backend_or_skip("keras")
    model = keras_.build("googlenet_bn")
    keras_.from_canonical(model, canonical.random_params(model.plan, 1))
    unit = model.conv1
    bn, conv = unit.bn, unit.conv
    kernel, bias = (keras_.keras.ops.convert_to_numpy(v) for v in keras_.layers.fold_batchnorm(conv, bn))
    names = ("moving_mean", "moving_variance", "gamma", "beta")
    values = {k: np.asarray(getattr(bn, k).numpy(), np.float64) for k in names}
    scale = values["gamma"] / np.sqrt(values["moving_variance"] + bn.epsilon)
    exact = np.asarray(conv.kernel.numpy(), np.float64) * scale
    assert np.all(np.abs(kernel - exact) <= 2 * np.finfo(np.float32).eps * np.abs(exact))
    np.testing.assert_array_equal(bias, (values["beta"] - values["moving_mean"] * scale).astype(np.float32))
    assert kernel.dtype == bias.dtype == np.float32


POOLS = {  # an Inception's pool branch, and the stride-2 ceil-mode pool between stages
    "size-keeping": (spec.Pool("branch4.0", "max", 3, 1, padding=1, ceil_mode=True), ((1, 1), (1, 1)), 1),
    "stride-2 ceil": (spec.Pool("maxpool2", "max", 3, 2, ceil_mode=True), ((0, 1), (0, 1)), 2),
}


@pytest.mark.parametrize("zero_padded", [False, True], ids=["same", "zero padding"])
@pytest.mark.parametrize("pool_name", list(POOLS))
def test_keras_max_pools_are_pytorchs_on_signed_maps(pool_name, zero_padded):
    """Where Keras's own "same" pads as PyTorch does (each Inception's pool branch; a
    stride-2 ceil-mode pool at even sizes), the pool runs as it, whose padded cells never
    win, as PyTorch's -inf padding: equal on maps of negative values, odd and even, in a
    graph of open size (as exported, and as the default mode decides per call), compiled
    by XLA, and eagerly. Padded with zeros, it fails."""
    keras_, torch_ = backend_or_skip("keras"), backend_or_skip("torch")
    pool, zeros, stride = POOLS[pool_name]
    layer = keras_.layers.Pool2D(pool)
    if zero_padded:
        pad, valid = keras_.keras.layers.ZeroPadding2D(zeros), keras_.keras.layers.MaxPooling2D(3, stride)
        layer = keras_.keras.Sequential([pad, valid])
    signature = [keras_.tf.TensorSpec((None, None, None, 4))]

    def fast(x):
        with keras_.layers.fast_graph():
            return layer(x)

    graph = keras_.tf.function(layer, input_signature=signature)  # as exported: one path
    fast_graph = keras_.tf.function(fast, input_signature=signature)  # the default mode's: decided per call
    xla = keras_.tf.function(layer, input_signature=signature, jit_compile=True)
    torch_pool = torch_.torch.nn.MaxPool2d(3, stride, padding=pool.padding, ceil_mode=True)
    equal = []
    for h, w in ((7, 8), (8, 9), (8, 8), (7, 7)):
        x = np.random.default_rng([h, w]).standard_normal((2, 4, h, w)).astype(np.float32) - 1.0
        expected = torch_pool(torch_.torch.from_numpy(x)).numpy()
        for run in (graph, fast_graph, xla, layer):
            got = np.asarray(run(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
            equal.append(got.shape == expected.shape and np.array_equal(got, expected))
    assert all(equal) if not zero_padded else not all(equal), equal


def test_an_unknown_mode_is_refused_by_name(backend):
    model = loaded_model(backend, "googlenet_bn")
    with pytest.raises(ValueError, match=r"mode: expected one of .*'eager'.*, got 'fast'"):
        backend.forward(model, random_images(1, 97), mode="fast")


def test_a_second_call_at_the_same_shape_compiles_nothing(backend, monkeypatch):
    made = []
    real = interface.compiled

    def counting(model, key, make):
        return real(model, key, lambda: made.append(key) or make())

    monkeypatch.setattr(interface, "compiled", counting)
    model = backend.build("inception_mnist")
    backend.forward(model, random_images(2, 28, channels=1))
    first = len(made)
    assert first <= 1  # one graph (or weight copy) for this shape, or nothing to compile
    for _ in range(2):
        backend.forward(model, random_images(2, 28, channels=1))
    assert len(made) == first  # the second and third calls compile nothing
    backend.forward(model, random_images(3, 28, channels=1))  # another batch size: another shape
    assert len(made) <= first + 1


def test_keras_graph_is_traced_once_for_every_size():
    """Tracing is Keras's cost (1-2 s per graph of googlenet), so one graph serves every
    batch and input size, and agrees with eager at each."""
    keras_ = backend_or_skip("keras")
    model = keras_.build("inception_mnist")
    for size, batch in ((28, 2), (28, 3), (31, 1), (28, 2)):  # 31: odd maps
        x = random_images(batch, size, channels=1)
        eager = keras_.forward(model, x, mode=interface.EAGER)
        assert agreement(eager, keras_.forward(model, x), logits=True).passed, (size, batch)
    (graph,) = interface._COMPILED[model].values()
    assert graph.experimental_get_tracing_count() == 1


def test_forgetting_one_shape_keeps_what_serves_any():
    class Model:  # anything a weak reference can hold
        pass

    model, other = Model(), Model()
    for key in (("hybrid", (2, 3, 28, 28), True), ("hybrid", (2, 3, 97, 97), True), ("graph", True, True)):
        interface.compiled(model, key, object)
    interface.compiled(other, ("hybrid", (2, 3, 28, 28), True), object)
    interface.forget_compiled(model, (2, 3, 28, 28))
    assert set(interface._COMPILED[model]) == {("hybrid", (2, 3, 97, 97), True), ("graph", True, True)}
    assert len(interface._COMPILED[other]) == 1  # another model's are its own
    interface.forget_compiled(model)
    assert model not in interface._COMPILED


def test_weights_loaded_after_a_fast_call_are_the_ones_used(backend):
    model = backend.build("googlenet_bn")
    p = spec.resolve("googlenet_bn")
    x = random_images(1, 97)
    backend.from_canonical(model, canonical.random_params(p, 1))
    before = backend.forward(model, x)
    backend.from_canonical(model, canonical.random_params(p, 2))
    after = backend.forward(model, x)
    assert agreement(backend.forward(model, x, mode=interface.EAGER), after, logits=True).passed
    assert not agreement(before, after).passed  # the new weights made a difference


def test_fast_modes_leave_eager_training_as_it_was(backend):
    """Gluon's hybridize would bake inference BatchNorm into the model's own blocks: the
    hybrid mode runs a separate block, so training the model is unaffected."""
    variant = spec.without_dropout(spec.variant("googlenet_bn"))  # random masks differ per run
    params = canonical.initial_params(spec.resolve(variant), 0)
    x, y = random_images(2, 97), np.array([3, 7])
    steps = {}
    for warmed in (False, True):
        model = backend.build(variant)
        backend.from_canonical(model, params)
        if warmed:
            backend.forward(model, x)
            backend.stages(model, x)
        trainer = backend.Trainer(model, lr=0.01, momentum=0.9)
        loss, _ = trainer.step(x, y)
        steps[warmed] = loss, trainer.gradients()
    assert steps[True][0] == pytest.approx(steps[False][0], rel=1e-6)
    for key, grad in steps[False][1].items():
        assert agreement(grad, steps[True][1][key]).max_rel <= 1e-5, key


def test_what_was_compiled_goes_with_the_model(backend):
    model = backend.build("inception_mnist")
    backend.forward(model, random_images(2, 28, channels=1))
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


# --------------------------------------------------------------------------------------
# Negative control: a fast path that is wrong must fail the comparison with eager.
# --------------------------------------------------------------------------------------


def folded(torch_model, eps: float | None = None):
    """A copy with every BatchNorm folded into its conv, as the torch fast modes run it
    (``impl_torch._fold_batchnorm``), with ``eps`` in place of each BatchNorm's own when
    given."""
    import impl_torch

    model = copy.deepcopy(torch_model)
    if eps is not None:
        for unit in model.modules():
            if hasattr(unit, "running_var"):
                unit.eps = eps
    impl_torch._fold_batchnorm(model)
    return model


def with_folded_mode(torch_, eps: float | None):
    """torch with a second mode, "folded", that runs the folded copy."""

    def stages(model, x, mode="folded"):
        return torch_.stages(folded(model, eps) if mode == "folded" else model, x, mode=interface.EAGER)

    return patched(torch_, MODES=("folded", interface.EAGER), stages=stages)


@pytest.mark.parametrize("eps,fails", [(None, False), (1e-5, True)], ids=["own epsilon", "Gluon's default 1e-5"])
def test_a_fast_path_folding_batchnorm_with_the_wrong_epsilon_fails(eps, fails):
    """Folded with torchvision's eps 1e-3 the fast path agrees with eager (so the check is
    not failing everything); with 1e-5 it fails from conv1 on, while the cross-framework
    comparison, which runs eager, still passes."""
    torch_ = backend_or_skip("torch")
    report = harness.run(["googlenet_bn"], {"torch": with_folded_mode(torch_, eps)}, {}, sizes=[97], batch=1)
    size = report.variants[0].sizes[0]
    rows = {r.stage: r for r in size.modes}
    assert set(rows) == set(spec.expected_shapes(full_plan("googlenet_bn"), 97))
    conv1 = rows["conv1"].agreement["torch folded"]
    assert all(r.passed for r in size.stages)
    if fails:
        assert not report.passed and not rows["conv1"].passed and conv1.max_rel > 100 * REL_TOL
        assert not rows["logits"].passed
    else:
        assert report.passed and conv1.max_rel < REL_TOL / 10


def test_keras_graphs_per_model_do_not_warn_of_retracing(caplog):
    """One graph per model is the design, and TensorFlow counts traces by the Python
    function's code: its retracing warning about them (printed in the middle of check's
    report before) is filtered, only for them."""
    keras_ = backend_or_skip("keras")
    with caplog.at_level("WARNING"):
        for batch in range(1, 8):
            keras_.forward(keras_.build("inception_mnist"), random_images(batch, 28, channels=1))
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    record = logging.LogRecord(
        "tensorflow", logging.WARNING, "", 0, "5 calls to <function f> triggered tf.function retracing.", None, None
    )
    assert keras_._OneGraphPerModel().filter(record)  # another function's warning still shows


# --------------------------------------------------------------------------------------
# check --modes all: every extra compared with eager; one that is wrong fails, one that
# cannot run a variant is skipped with its reason; --modes default leaves them out.
# --------------------------------------------------------------------------------------


def with_extras(torch_):
    """torch with two extras after eager: "perturbed", eager with incep2 off by 0.1%
    (ten times the tolerance), and "refusing", a compiler that cannot run the variant."""

    def stages(model, x, mode=torch_.MODES[0]):
        if mode == "refusing":
            raise interface.Unsupported("this compiler lacks an operator of the variant")
        out = torch_.stages(model, x, mode=interface.EAGER if mode == "perturbed" else mode)
        if mode == "perturbed":
            out["incep2"] = out["incep2"] * np.float32(1.001)
        return out

    return patched(torch_, MODES=(torch_.MODES[0], interface.EAGER, "perturbed", "refusing"), stages=stages)


def test_modes_all_catches_a_wrong_extra_and_skips_one_that_cannot_run():
    torch_ = backend_or_skip("torch")
    backends = {"torch": with_extras(torch_)}
    everything = harness.run(["inception_mnist"], backends, {}, sizes=[28], batch=2, modes="all")
    (size,) = everything.variants[0].sizes
    rows = {r.stage: r for r in size.modes}
    assert not everything.passed and not rows["incep2"].passed and rows["incep2"].agreement["torch perturbed"]
    assert rows["incep1"].passed  # before the perturbed stage it agrees
    assert everything.variants[0].unsupported == {
        "torch refusing at 28": "this compiler lacks an operator of the variant"
    }
    assert everything.modes == {"torch": [torch_.MODES[0], "eager", "perturbed", "refusing"]}
    default = harness.run(["inception_mnist"], backends, {}, sizes=[28], batch=2)
    assert default.passed and default.modes == {"torch": [torch_.MODES[0], "eager"]}
    assert all(set(r.agreement) == {f"torch {torch_.MODES[0]}"} for r in default.variants[0].sizes[0].modes)
    with pytest.raises(ValueError, match=r"--modes: expected one of default, all, got 'some'"):
        harness.run(["inception_mnist"], backends, {}, sizes=[28], modes="some")


def test_torch_compile_agrees_with_eager_in_the_check():
    """The one test that runs torch.compile (its first call compiles for about a minute)."""
    torch_ = backend_or_skip("torch")
    report = harness.run(["inception_mnist"], {"torch": torch_}, {}, sizes=[28], batch=2, modes="all")
    rows = report.variants[0].sizes[0].modes
    assert report.passed and not report.variants[0].unsupported and not report.variants[0].errors
    assert all("torch compile" in r.agreement for r in rows) and len(rows) == 10
