"""All installed frameworks agree stage by stage, for every variant, at 224 and at odd
sizes, with the same canonical weights: the harness end to end."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.check import harness, inputs, memory
from conformance.check.compare import REL_TOL

from .conftest import installed


@pytest.fixture(scope="module")
def report():
    backends = installed()
    if len(backends) < 2:
        pytest.skip(f"needs two frameworks to compare, found {sorted(backends)}")
    return harness.run(list(spec.VARIANTS), backends, {}, batch=2)  # each variant's default sizes


@pytest.mark.e2e
def test_every_check_passes(report):
    failing = [(v.variant, s.size, r.stage) for v in report.variants for s in v.sizes for r in s.stages if not r.passed]
    assert report.passed, failing


@pytest.mark.e2e
def test_logits_within_tolerance_with_identical_top5(report):
    for v in report.variants:
        for s in v.sizes:
            logits = next(r for r in s.stages if r.stage == "logits")
            assert logits.agreement, "no framework was compared"
            for fw, a in logits.agreement.items():
                assert a.max_rel <= REL_TOL and a.top1 == 1.0 and a.top5 == 1.0, (v.variant, s.size, fw)


@pytest.mark.e2e
def test_every_stage_of_the_spec_was_compared(report):
    for v in report.variants:
        p = spec.resolve(v.variant, **v.options)
        for s in v.sizes:
            compared = {r.stage for r in s.stages if r.agreement}
            assert compared == set(spec.expected_shapes(p, s.size)), (v.variant, s.size)
            assert ("aux1" in compared) == s.aux


@pytest.mark.e2e
def test_aux_heads_compared_at_224_and_odd_sizes(report):
    sizes = {v.variant: {s.size: s.aux for s in v.sizes} for v in report.variants}
    assert sizes["googlenet"] == {224: True, 239: True, 97: False}  # avg 5x5/3 needs a 14..16 map
    # Caffe's: avg 5x5/3 rounding up gives 4 x 4 from a 12..14 map (inputs 191-238), but its fixed 7x7/1
    # head pool runs only at 223-254: aux heads at 224 and the variant's own odd 231, not at 239
    assert sizes["googlenet_lrn"] == {224: True, 239: False, 231: True}
    lrn = next(v for v in report.variants if v.variant == "googlenet_lrn")
    assert (
        "7 x 7 window is larger than the 3 x 3 map; fc expects 1 x 1 (googlenet_lrn runs at 223-254)"
        in (lrn.skipped_sizes[97])
    )
    assert sizes["googlenet_d2l"] == {96: False, 239: False, 97: False}  # its own 96 first; no aux heads
    assert sizes["googlenet_bn"] == {224: True, 239: True, 97: True}  # adaptive: any size
    # GluonCV's fixed 7x7 head pool needs a 7..13 map: 97 is skipped, with the reason
    assert sizes["googlenet_gluoncv"] == {224: True, 239: True}
    gluoncv = next(v for v in report.variants if v.variant == "googlenet_gluoncv")
    assert "fc expects 1 x 1" in gluoncv.skipped_sizes[97]


@pytest.mark.e2e
def test_round_trips_are_bit_identical(report):
    for v in report.variants:
        assert v.roundtrip and all(not bad for bad in v.roundtrip.values()), v.roundtrip
        assert any("->" in k for k in v.roundtrip)  # the chain through every framework ran


def smallest_size(variant: str) -> int:
    return next(s for s in range(1, 1000) if inputs.inadmissible(variant, s) is None)


def test_the_smallest_sizes_the_spec_admits_run_in_every_framework():
    """The spec's admissibility is the common ground of the frameworks: PyTorch runs a
    ceil-mode pool window larger than its input, MXNet refuses, so the spec refuses too."""
    backends = installed()
    if len(backends) < 2:
        pytest.skip(f"needs two frameworks to compare, found {sorted(backends)}")
    sizes = {v: smallest_size(v) for v in spec.VARIANTS}
    assert sizes == {
        "googlenet": 47,
        "googlenet_bn": 31,
        "googlenet_gluoncv": 223,
        "googlenet_lrn": 223,  # Caffe's fixed 7x7/1 head pool: 223-254
        "googlenet_slim": 193,  # TF-slim's 7x7/1 VALID head pool: 193-224
        "googlenet_d2l": 1,
        "googlenet_cifar": 1,  # padded floor pools never outgrow their input
        "inception_mnist": 28,
        "residual_mnist": 28,
    }  # fc reads a 4 x 4 map: 28..31 give one
    assert [s for s in range(20, 40) if inputs.inadmissible("inception_mnist", s) is None] == [28, 29, 30, 31]
    assert "maxpool4 window (2 x 2) is larger than its 1 x 1 input" in inputs.inadmissible("googlenet_bn", 30)
    r = harness.run(["googlenet", "googlenet_bn"], backends, {}, sizes=[31, 47], batch=1)
    assert r.passed, [(v.variant, v.errors) for v in r.variants]
    assert [s.size for s in r.variants[0].sizes] == [47] and 31 in r.variants[0].skipped_sizes


def test_runs_kept_on_disk_compare_exactly_as_in_memory(monkeypatch):
    """Stages above SPILL_BYTES wait on disk until compared; with everything spilled the
    report is the same, figure for figure."""
    backends = installed()
    if len(backends) < 2:
        pytest.skip(f"needs two frameworks to compare, found {sorted(backends)}")
    in_memory = harness.run(["inception_mnist"], backends, {}, batch=2)
    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    spilled = harness.run(["inception_mnist"], backends, {}, batch=2, train=True)
    assert spilled.passed and spilled.variants[0].training
    assert spilled.variants[0].sizes == in_memory.variants[0].sizes
