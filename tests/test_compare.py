"""The comparison metrics themselves, on arrays built to pass or fail."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.check.compare import REL_TOL, agreement, identical, percent


def logits(seed=0, n=4, classes=1000):
    return np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32) * 5


def test_identical_arrays_agree_exactly():
    x = logits()
    a = agreement(x, x.copy(), logits=True)
    assert (a.max_abs, a.max_rel, a.top1, a.top5, a.passed) == (0.0, 0.0, 1.0, 1.0, True)


def test_float32_rounding_noise_passes_and_a_real_error_fails():
    x = logits()
    noise = x * (1 + np.random.default_rng(1).uniform(-1e-6, 1e-6, x.shape)).astype(np.float32)
    assert agreement(x, noise).passed
    off = x.copy()
    off[2, 7] += 3 * REL_TOL * np.abs(x).max()  # one element, three tolerances off
    a = agreement(x, off)
    assert not a.passed and a.max_rel == pytest.approx(3 * REL_TOL, rel=1e-3)


def test_relative_error_is_to_the_reference_largest_magnitude():
    ref = np.array([[100.0, 1.0]], np.float32)
    got = np.array([[100.0, 1.5]], np.float32)
    a = agreement(ref, got)
    assert a.max_abs == pytest.approx(0.5) and a.max_rel == pytest.approx(0.005)


def test_swapped_ranks_fail_top5_even_within_tolerance():
    x = np.zeros((1, 10), np.float32)
    x[0, :6] = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0]
    y = x.copy()
    y[0, 3], y[0, 4] = 6.0, 7.0  # ranks 4 and 5 swap: values are 1e-1 off
    a = agreement(x, y, logits=True, rel_tol=1.0)
    assert a.top1 == 1.0 and a.top5 == 0.0 and not a.passed


def test_a_permuted_output_is_not_hidden_by_sorting():
    x = logits(n=1)
    a = agreement(x, x[:, ::-1].copy(), logits=True)
    assert not a.passed and a.top1 == 0.0


def test_nan_fails():
    x = logits()
    y = x.copy()
    y[0, 0] = np.nan
    assert not agreement(x, y).passed


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"cannot compare shapes"):
        agreement(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))


def test_identical_means_names_order_dtype_and_bits():
    a = {"w": np.array([0.0, 1.0], np.float32), "b": np.ones(2, np.float32)}
    assert identical(a, {k: v.copy() for k, v in a.items()}) == []
    assert identical(a, {"b": a["b"], "w": a["w"]}) == ["<key order>"]
    assert identical(a, {"w": np.array([-0.0, 1.0], np.float32), "b": a["b"]}) == ["w"]  # -0.0 != +0.0 in bits
    assert identical(a, {"w": a["w"].astype(np.float64), "b": a["b"]}) == ["w"]
    assert identical(a, {"w": a["w"]}) == ["b"]
    assert identical(a, {**a, "x": a["b"]}) == ["x"]


def test_block_by_block_comparison_is_the_whole_arrays_and_keeps_nan(monkeypatch):
    """agreement() compares 2**18 elements at a time (a stage can be 84 MB): the same
    figures as the whole arrays at once, and a NaN or Inf in any block fails."""
    from conformance.check import compare

    monkeypatch.setattr(compare, "CHUNK", 7)  # many blocks, the last one short
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 5, 4)).astype(np.float32)
    got = ref + rng.standard_normal(ref.shape).astype(np.float32) * 1e-6
    a = agreement(ref, got)
    whole = np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()
    assert a.max_abs == whole and a.max_rel == whole / np.abs(ref).max() and a.passed
    for bad in (np.nan, np.inf):
        broken = got.copy()
        broken[2, 4, 3] = bad  # in the last block
        b = agreement(ref, broken)
        assert not b.passed and not np.isfinite(b.max_abs)


def test_a_tie_within_round_off_ranked_the_other_way_is_no_disagreement():
    # 20,000 images at inception_mnist's seeded weights: one image's third and fourth
    # classes were 6.7e-6 apart, and channels_last ranked them the other way
    x = np.zeros((2, 10), np.float32)
    x[:, :6] = [16.0, 2.85, 2.1446242, 2.144631, -1.8, -5.0]
    y = x.copy()
    y[0, 2], y[0, 3] = x[0, 3], x[0, 2]
    a = agreement(x, y, logits=True)
    assert a.passed and (a.top1, a.top5, a.ties) == (1.0, 1.0, 1)
    # negative control: the same swap between classes further apart than round-off
    y[1, 1], y[1, 2] = x[1, 2] + 1e-2, x[1, 1] - 1e-2
    b = agreement(x, y, logits=True, rel_tol=1.0)
    assert not b.passed and b.top5 == 0.5 and b.ties == 1


def test_a_disagreement_never_shows_as_100_percent():
    assert percent(19_999 / 20_000) == "99.99%"
    assert percent(1 / 20_000) == "0.01%"
    assert (percent(1.0), percent(0.0), percent(0.5)) == ("100%", "0%", "50%")
