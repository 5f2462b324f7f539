"""impl_jax, the JAX + Flax implementation (framework ``jax``): every variant's counts and
canonical round trip, the check against PyTorch on variants with LRN, BatchNorm and aux
heads, a port with one mistake that the check catches, the -inf a max pool pads with,
and training parity. Needs jax and flax (``pip install -e ".[jax]"`` in an environment
of its own); skipped without them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
torch = pytest.importorskip("torch")

import impl_jax  # noqa: E402 - after the skips: it imports jax
import impl_torch  # noqa: E402
from conformance import interface, spec  # noqa: E402
from conformance.canonical import random_params  # noqa: E402
from conformance.check import harness  # noqa: E402
from conformance.check.inputs import full_options  # noqa: E402
from conformance.spec import Pool  # noqa: E402
from impl_jax import layers  # noqa: E402
from impl_jax import model as jax_model  # noqa: E402

from .conftest import eager_only  # noqa: E402

BACKENDS = {"torch": impl_torch, "jax": impl_jax}
EAGER_ONLY = eager_only(BACKENDS)  # the negative controls': the broken port's jit would compile for nothing


def test_it_satisfies_the_interface():
    assert interface.breaches(impl_jax) == []
    assert impl_jax.MODES == ("jit", "eager")


@pytest.mark.parametrize("variant", list(spec.VARIANTS))
def test_every_variant_counts_as_the_spec_and_round_trips_bit_identically(variant):
    model = impl_jax.build(variant, **full_options(spec.VARIANTS[variant]))  # aux heads, input transform
    assert impl_jax.count_params(model) == spec.count_params(model.plan)
    params = random_params(model.plan, seed=3, training=True)
    impl_jax.from_canonical(model, params)
    back = impl_jax.to_canonical(model)
    assert list(back) == list(params)
    for key, value in params.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_a_checkpoint_that_does_not_fit_is_refused_by_key():
    model = impl_jax.build("inception_mnist")
    params = random_params(model.plan)
    params["fc.weight"] = params["fc.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"fc\.weight"):
        impl_jax.from_canonical(model, params)


def own_size(variant: str) -> list[int]:
    return [spec.VARIANTS[variant].input.size]


# googlenet_lrn: LRN and aux heads (full options: aux and transform_input);
# googlenet_cifar: BatchNorm; inception_mnist: average pools with padding, no head pool.
@pytest.mark.parametrize("variant", ["googlenet_lrn", "googlenet_cifar", "inception_mnist"])
def test_it_agrees_with_torch_stage_by_stage(variant):
    report = harness.run([variant], BACKENDS, {}, sizes=own_size(variant), batch=2)
    failing = [(s.size, r.stage) for v in report.variants for s in v.sizes for r in s.stages if not r.passed]
    assert report.passed, (failing, report.variants[0].errors)
    stages = {r.stage for s in report.variants[0].sizes for r in s.stages}
    assert {"logits", "aux1", "aux2"} <= stages or variant != "googlenet_lrn"


def test_a_port_with_floor_pooling_fails_the_stage_check(monkeypatch):
    """Negative control: max pools that round down (PyTorch's default, not GoogLeNet's).
    At 99 conv1's map is 50 wide, where ceil and floor differ (25 and 24), and the aux
    heads are not admitted, so the stages, not an aux head's fc1, show it."""

    make_pool = layers.make_pool

    def floor_pool(p):
        return make_pool(dataclasses.replace(p, ceil_mode=False) if isinstance(p, Pool) and p.kind == "max" else p)

    monkeypatch.setattr(layers, "make_pool", floor_pool)
    monkeypatch.setattr(jax_model, "make_pool", floor_pool)
    report = harness.run(["googlenet"], EAGER_ONLY, {}, sizes=[99], batch=1)
    assert not report.passed and not report.variants[0].errors
    failing = [r.stage for s in report.variants[0].sizes for r in s.stages if not r.passed]
    assert failing[0] == "maxpool1"


def test_a_port_that_ignores_count_include_pad_fails_the_stage_check(monkeypatch):
    """Negative control: inception_mnist's branch pools (3x3 average, padding 1) count
    the zero padding in each mean, as PyTorch's ``count_include_pad`` does; a port that
    divides by the image's cells only differs along every border."""
    divisor = layers.avg_divisor
    monkeypatch.setattr(
        layers, "avg_divisor", lambda size, p: divisor(size, dataclasses.replace(p, count_include_pad=False))
    )
    report = harness.run(["inception_mnist"], EAGER_ONLY, {}, sizes=[28], batch=2)
    assert not report.passed
    failing = [r.stage for s in report.variants[0].sizes for r in s.stages if not r.passed]
    assert failing[0] == "incep1"


def test_a_max_pool_pads_with_minus_infinity():
    """Every activation negative: a padded cell must never win (a zero would)."""
    pool = Pool("pool", "max", kernel=3, stride=2, padding=1, ceil_mode=True)
    x = -1.0 - np.random.default_rng(0).random((1, 3, 9, 9)).astype(np.float32)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True).numpy()
    got = np.asarray(layers.Pool2D(pool)(jax.numpy.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert np.array_equal(got, want)
    assert (got < 0).all()


def test_training_matches_torch_in_float64():
    report = harness.run(["inception_mnist"], BACKENDS, {}, sizes=[28], batch=2, train=True)
    rows = report.variants[0].training
    assert rows and all(r.passed for r in rows), [(r.quantity, r.worst) for r in rows if not r.passed]
    assert {"loss", "gradients", "weights after step 2"} <= {r.quantity for r in rows}


def steps(trainer, x, y, count):
    return [trainer.step(x, y) for _ in range(count)]


def test_training_repeats_bit_for_bit_and_resumes_from_its_state():
    p = spec.resolve(spec.without_dropout(spec.variant("inception_mnist")))
    params = random_params(p, seed=1, training=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, p.num_classes, 2)

    def fresh():
        model = impl_jax.build(p.variant)
        impl_jax.from_canonical(model, params)
        return model, impl_jax.Trainer(model, lr=0.05, momentum=0.9, deterministic=True)

    first, run1 = fresh()
    second, run2 = fresh()
    # the weights and momentum after the first step, copied (a step donates its buffers)
    losses = steps(run1, x, y, 1)
    weights = {k: v.copy() for k, v in impl_jax.to_canonical(first).items()}
    momentum = {k: v.copy() for k, v in run1.state().items()}
    losses += steps(run1, x, y, 1)
    assert losses == steps(run2, x, y, 2)  # taking the state midway changed nothing
    for key, value in impl_jax.to_canonical(first).items():
        assert np.array_equal(value, impl_jax.to_canonical(second)[key]), key
    # resume: the weights and momentum after one step, then the second step
    assert momentum and set(momentum) <= set(weights)
    again, trainer = fresh()
    impl_jax.from_canonical(again, {k: v.astype(np.float32) for k, v in weights.items()})
    trainer.load_state(momentum)
    steps(trainer, x, y, 1)
    for key, value in impl_jax.to_canonical(first).items():
        assert np.array_equal(value, impl_jax.to_canonical(again)[key]), key
    with pytest.raises(KeyError, match="nonexistent"):
        trainer.load_state({"nonexistent.weight": np.zeros(1)})


def test_onnx_export_is_reported_unsupported_with_the_reason():
    model = impl_jax.build("inception_mnist")
    with pytest.raises(interface.Unsupported, match="exporter"):
        impl_jax.to_onnx(model, (1, 1, 28, 28), with_aux=False, every_stage=False)


def test_dropouts_draw_from_one_stream_that_reseed_restarts():
    """The aux heads' dropouts and the classifier's read equally wide inputs: streams of
    their own seeded alike would drop the same units in each."""
    model = impl_jax.build("googlenet", aux_logits=True)
    trainer = impl_jax.Trainer(model, lr=0.01, momentum=0.9)
    model.train()
    x = jax.numpy.ones((2, 1024), model.dtype)
    masks = [np.asarray(model.aux1.dropout(x)), np.asarray(model.aux2.dropout(x)), np.asarray(model.dropout(x))]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    trainer.reseed(5)
    first = np.asarray(model.dropout(x))
    trainer.reseed(5)
    assert np.array_equal(first, np.asarray(model.dropout(x)))
