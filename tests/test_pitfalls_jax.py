"""The pitfalls of JAX + Flax ports (framework ``jax``), beyond what ``tests/test_pitfalls.py``
measures on each entry's default variants: each mistake made on the one layer it lives
in, against PyTorch's layer (the reference) on the input where it shows, and the right
way agreeing; the zero-padded max pool, which changes nothing in the suite's networks,
also shown diverging at the stage ``locate`` names in a network that lets it. Skipped
where jax is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import spec
from conformance.teach import command, locate, replays
from conformance.teach.pitfalls import PITFALLS

from .conftest import XLA_TRAINING, cli, skip_without_jax

JAX_PITFALLS = ["zero-padded-max-pool", "flax-avg-pool", "flax-kernel-io", "flax-bn-momentum", "flax-running-variance"]


def test_the_jax_pitfalls_are_tagged_and_selected_by_framework():
    assert [n for n, p in PITFALLS.items() if p.framework == "jax"] == JAX_PITFALLS
    assert command.selected(None, ["jax"]) == JAX_PITFALLS
    assert command.selected(["lrn-alpha", "flax-avg-pool"], ["jax"]) == ["flax-avg-pool"]
    assert command.ports("jax, keras") == ["jax", "keras"]
    assert "jax" in command.PORTS


def test_a_framework_without_the_named_pitfalls_is_refused_before_any_work():
    r = cli("pitfalls", "--framework", "jax", "--pitfall", "lrn-alpha")
    assert r.returncode == 2 and "--frameworks jax: no pitfall --pitfall names is made by such a port" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("pitfalls", "--frameworks", "jax,tensorflow")
    assert r.returncode == 2 and "--frameworks: no pitfall of a port to tensorflow; expected a comma" in r.stderr
    assert "Traceback" not in r.stderr


def test_where_a_zero_pad_can_win_from_the_spec():
    """Every padded max pool of the suite's GoogLeNets reads a ReLU's output; without the
    conv units' ReLUs the first padded pool reads a signed map; Liu's pools are unpadded."""
    for variant in ("googlenet", "googlenet_bn", "googlenet_lrn", "googlenet_slim", "googlenet_d2l", "googlenet_cifar"):
        p = spec.resolve(variant)
        assert locate.where_zero_pad(p, p.input_size) is None, variant
    unrectified = replays.relu(False)(spec.resolve("googlenet_d2l"))
    assert locate.where_zero_pad(unrectified, 96) == "maxpool1"
    cifar = replays.relu(False)(spec.resolve("googlenet_cifar"))  # its first max pool: the stage after conv3
    assert locate.where_zero_pad(cifar, 32) == "maxpool2"
    with pytest.raises(locate.NotApplicable, match="no padding and round down"):
        locate.where_zero_pad(spec.resolve("residual_mnist"), 28)


# ---------------------------------------------------------------------------------------
# The mistakes on their own layers (need jax and torch)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jax_and_torch():
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    return pytest.importorskip("jax"), pytest.importorskip("torch")


def _holding(module):
    """A one-child Flax module, so a mistake can swap the child as it swaps a model's."""
    from flax import nnx

    class Holder(nnx.Module):
        def __init__(self, child) -> None:
            self.child = child

    return Holder(module)


def _nhwc(x: np.ndarray):
    import jax.numpy as jnp

    return jnp.asarray(x.transpose(0, 2, 3, 1))


def _nchw(y) -> np.ndarray:
    return np.asarray(y).transpose(0, 3, 1, 2)


def test_a_zero_padded_max_pool_wins_only_over_negative_windows(jax_and_torch):
    _, torch = jax_and_torch
    from conformance.teach import mistakes_jax
    from impl_jax.layers import Pool2D

    pool = spec.resolve("googlenet_bn").stages[1]  # maxpool1: 3x3/2, ceil: 112 -> 56 reads one column past
    assert isinstance(pool, spec.Pool) and locate.max_pool_pads(pool, 112) == (0, 1)
    signed = np.random.default_rng(0).standard_normal((2, 4, 112, 112)).astype(np.float32)
    for x, differs in ((signed, True), (np.maximum(signed, 0), False)):  # before and after a ReLU
        want = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, ceil_mode=True).numpy()
        right, broken = _holding(Pool2D(pool)), _holding(Pool2D(pool))
        mistakes_jax.zero_padded_max_pools(broken)
        assert type(broken.child).__name__ == "ZeroPaddedMaxPool2D"
        assert np.array_equal(_nchw(right.child(_nhwc(x))), want)
        got = _nchw(broken.child(_nhwc(x)))
        assert got.shape == want.shape
        assert (not np.array_equal(got, want)) == differs
        if differs:  # only the last row and column read the pad, and a zero wins there only
            diff = got != want
            assert not diff[..., :-1, :-1].any() and (got[diff] == 0).all() and (want[diff] < 0).all()


def test_a_zero_padded_max_pool_diverges_where_locate_says_in_a_network_that_lets_it(jax_and_torch):
    """googlenet_d2l without its conv units' ReLUs: maxpool1 reads conv1's signed map."""
    import impl_jax
    import impl_torch
    from conformance.canonical import random_params
    from conformance.teach import mistakes_jax, stages

    p = replays.relu(False)(spec.resolve("googlenet_d2l"))
    params = random_params(p, 0)
    x = stages.seeded_input(p, 96, 2, 0)
    reference = impl_torch.GoogLeNet(p).eval()
    impl_torch.from_canonical(reference, params)
    for broken in (False, True):  # the right way first: a trace of it must not serve the broken model
        model = impl_jax.GoogLeNet(p)
        if broken:
            mistakes_jax.zero_padded_max_pools(model)
        impl_jax.from_canonical(model, params)
        model.eval()
        rows = stages.compare_runs(
            lambda c: impl_torch.stages(reference, c),
            lambda c, m=model: impl_jax.stages(m, c),
            x,
            stages.logit_stages(p),
        )
        first = stages.first_divergence(rows)
        assert (first and first.stage) == ("maxpool1" if broken else None), first
    assert locate.where_zero_pad(p, 96) == "maxpool1"


def test_flax_avg_pool_counts_what_pytorch_does_not(jax_and_torch):
    """count_include_pad=False leaves the padding out where F.avg_pool2d counts it; Flax's
    default True counts a ceil-mode window's extra end, which PyTorch never counts."""
    _, torch = jax_and_torch
    from flax import nnx

    from conformance.teach import mistakes_jax
    from impl_jax.layers import Pool2D, pool_pads

    x = np.random.default_rng(1).standard_normal((2, 3, 13, 13)).astype(np.float32)
    t = torch.from_numpy(x)
    branch = spec.Pool("pool", "avg", 3, 1, padding=1)  # inception_mnist's branch pool
    want = torch.nn.functional.avg_pool2d(t, 3, 1, 1).numpy()
    right, broken = _holding(Pool2D(branch)), _holding(Pool2D(branch))
    mistakes_jax.flax_avg_pools(broken)
    np.testing.assert_allclose(_nchw(right.child(_nhwc(x))), want, rtol=1e-6, atol=1e-6)
    got = _nchw(broken.child(_nhwc(x)))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(got[inner], want[inner], rtol=1e-6, atol=1e-6)  # the border only
    np.testing.assert_allclose(got[..., 0, 0], want[..., 0, 0] * 9 / 4, rtol=1e-5)  # a corner: 4 cells, not 9

    aux = spec.Pool("pool", "avg", 5, 3, ceil_mode=True)  # Caffe's aux pool on a 13 x 13 map: one cell past
    assert pool_pads(13, aux) == (0, 1)
    want = torch.nn.functional.avg_pool2d(t, 5, 3, ceil_mode=True).numpy()
    np.testing.assert_allclose(_nchw(Pool2D(aux)(_nhwc(x))), want, rtol=1e-6, atol=1e-6)
    flax_default = _nchw(nnx.avg_pool(_nhwc(x), (5, 5), (3, 3), ((0, 1), (0, 1))))
    np.testing.assert_allclose(flax_default[..., :-1, :-1], want[..., :-1, :-1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flax_default[..., -1, 0], want[..., -1, 0] * 4 / 5, rtol=1e-5)  # 20 cells of 25


def test_a_kernel_with_in_and_out_swapped_loads_where_they_are_equal_and_computes_another_conv(jax_and_torch):
    jax, torch = jax_and_torch
    from impl_jax.weights import to_flax

    unit = spec.resolve("googlenet_cifar").stages[1]  # conv2: 3x3, 64 -> 64
    assert isinstance(unit, spec.ConvUnit) and unit.in_channels == unit.out_channels == 64
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1).numpy()

    def conv(kernel: np.ndarray) -> np.ndarray:
        dims = ("NHWC", "HWIO", "NHWC")
        return _nchw(jax.lax.conv_general_dilated(_nhwc(x), kernel, (1, 1), [(1, 1)] * 2, dimension_numbers=dims))

    swapped = weight.transpose(2, 3, 0, 1)
    assert swapped.shape == to_flax(weight).shape  # nothing refuses it
    np.testing.assert_allclose(conv(to_flax(weight)), want, rtol=1e-4, atol=1e-4)
    assert np.abs(conv(swapped) - want).max() > 1.0
    # where in and out differ, the same permutation changes the shape: conv1, 3 -> 64
    assert weight[:, :3].transpose(2, 3, 0, 1).shape != to_flax(weight[:, :3]).shape


@pytest.mark.e2e
def test_the_catalogue_measures_the_flax_training_entries(xla_training_pitfall_measurements):
    got = xla_training_pitfall_measurements
    assert {k[0] for k in got} == XLA_TRAINING == {"flax-bn-momentum", "flax-running-variance"}
    skip_without_jax(got)
    for name in sorted(XLA_TRAINING):
        m = got[(name, "googlenet_cifar")]
        assert m.first == "running statistics after step 1" and m.first_note.endswith(("running_mean", "running_var"))
        # gradients, batch statistics, weights after step 1
        assert [pt.passed for pt in m.points[:3]] == [True, True, True]
    assert got[("flax-running-variance", "googlenet_cifar")].first_note.endswith("running_var")
