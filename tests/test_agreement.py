"""All installed frameworks agree stage by stage, for every variant, at 224 and at odd
sizes, with the same canonical weights: the harness end to end."""

from __future__ import annotations

import pytest

from conformance import harness, spec
from conformance.compare import REL_TOL

from .conftest import installed


@pytest.fixture(scope="module")
def report():
    backends = installed()
    if len(backends) < 2:
        pytest.skip(f"needs two frameworks to compare, found {sorted(backends)}")
    return harness.run(list(spec.VARIANTS), backends, {}, sizes=[224, 225, 97], batch=2)


def test_every_check_passes(report):
    failing = [(v.variant, s.size, r.stage) for v in report.variants for s in v.sizes
               for r in s.stages if not r.passed]
    assert report.passed, failing


def test_logits_within_tolerance_with_identical_top5(report):
    for v in report.variants:
        for s in v.sizes:
            logits = next(r for r in s.stages if r.stage == "logits")
            assert logits.agreement, "no framework was compared"
            for fw, a in logits.agreement.items():
                assert a.max_rel <= REL_TOL and a.top1 == 1.0 and a.top5 == 1.0, (v.variant, s.size, fw)


def test_every_stage_of_the_spec_was_compared(report):
    for v in report.variants:
        p = spec.plan(spec.configure(v.variant, **v.options))
        for s in v.sizes:
            compared = {r.stage for r in s.stages if r.agreement}
            assert compared == set(spec.expected_shapes(p, s.size)), (v.variant, s.size)
            assert ("aux1" in compared) == s.aux


def test_aux_heads_compared_at_224_and_odd_225(report):
    sizes = {v.variant: {s.size: s.aux for s in v.sizes} for v in report.variants}
    assert sizes["googlenet"] == {224: True, 225: True, 97: False}  # avg 5x5/3 needs a 14..16 map
    assert sizes["googlenet_bn"] == {224: True, 225: True, 97: True}  # adaptive: any size


def test_round_trips_are_bit_identical(report):
    for v in report.variants:
        assert v.roundtrip and all(not bad for bad in v.roundtrip.values()), v.roundtrip
        assert any("->" in k for k in v.roundtrip)  # the chain through every framework ran
