"""Naming schemes: one registry, every scheme both ways, and the two bugs a review
found in the old if/else chain (an unknown scheme fell through to GluonCV's names; a
GluonCV file without ``output.weight`` kept ``head.2.weight`` while the log said it
was dropped)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import naming


@pytest.mark.parametrize(
    "variant,scheme",
    [
        ("googlenet_bn", "canonical"),
        ("googlenet_bn", "gluon"),
        ("googlenet_gluoncv", "gluoncv"),
        ("googlenet_cifar", "cifar100"),
    ],
)
def test_every_scheme_round_trips_and_is_detected(variant, scheme):
    p = spec.resolve(variant, aux_logits=spec.VARIANTS[variant].aux is not None)
    params = canonical.random_params(p, 0)
    theirs = naming.from_canonical(params, scheme, p)
    assert naming.detect(theirs) == scheme
    back, _ = naming.to_canonical(theirs, scheme, p)
    assert back.keys() == params.keys() and all(back[k] is params[k] for k in params)


def test_cifar100_names_are_written_as_cifar100_names():
    """The old chain returned GluonCV's names (``conv1.0.weight``) for any scheme it did not know."""
    p = spec.resolve("googlenet_cifar")
    out = naming.from_canonical(canonical.random_params(p, 0), "cifar100", p)
    assert list(out)[:2] == ["prelayer.0.weight", "prelayer.1.weight"]
    assert "linear.weight" in out and not any(k.startswith("conv1.") for k in out)


def test_an_unknown_scheme_is_an_error_naming_the_known_ones():
    p = spec.resolve("googlenet")
    known = ", ".join(naming.SCHEMES)
    assert "gluoncv" in known and "cifar100" in known
    with pytest.raises(naming.NamingError, match=rf"unknown 'nonesuch'; expected one of {known}$"):
        naming.from_canonical(canonical.random_params(p, 0), "nonesuch", p)
    with pytest.raises(naming.NamingError, match="unknown 'nonesuch'"):
        naming.to_canonical({}, "nonesuch", p)


def _gluoncv_file() -> tuple[spec.Plan, dict[str, np.ndarray]]:
    p = spec.resolve("googlenet_gluoncv", aux_logits=True)
    return p, naming.from_canonical(canonical.random_params(p, 0), "gluoncv", p)


def test_gluoncv_duplicate_classifier_is_dropped_once_checked_equal():
    p, theirs = _gluoncv_file()
    assert np.array_equal(theirs["head.2.weight"], theirs["output.weight"])  # GluonCV saves it twice
    params, notes = naming.to_canonical(theirs, "gluoncv", p)
    assert not any(k.startswith("head.2") for k in params)
    assert "dropped GluonCV's duplicate head.2.weight (the same tensor as output.weight)" in notes
    canonical.validate(p, params)


def test_gluoncv_file_with_only_the_second_copy_keeps_it_as_the_classifier():
    """The old code logged 'dropped ... head.2.weight' and kept it under its GluonCV name."""
    p, theirs = _gluoncv_file()
    expected = theirs.pop("output.weight")
    params, notes = naming.to_canonical(theirs, "gluoncv", p)
    assert "head.2.weight" not in params and np.array_equal(params["fc.weight"], expected)
    assert "took GluonCV's head.2.weight as output.weight, which the file lacks" in notes
    assert not any("dropped GluonCV's duplicate head.2.weight" in n for n in notes)
    canonical.validate(p, params)


def test_gluoncv_copies_that_differ_are_refused():
    p, theirs = _gluoncv_file()
    theirs["head.2.bias"] = theirs["head.2.bias"] + 1
    with pytest.raises(naming.NamingError, match=r"head.2.bias and output.bias should be the same tensor"):
        naming.to_canonical(theirs, "gluoncv", p)
