"""The sizes ``check`` runs each variant at besides its own (``conformance.check.inputs``):
the odd sizes, a small net's own odd sizes, and the sizes a variant adds."""

from __future__ import annotations

import itertools

from conformance import spec
from conformance.check import inputs


def test_check_runs_each_variants_extra_sizes():
    """The harness's extra sizes (``check.inputs.EXTRA_SIZES``, not the model spec's) name
    real variants at sizes they admit, and ``check`` runs them after its defaults."""
    for name, sizes in inputs.EXTRA_SIZES.items():
        assert name in spec.VARIANTS
        assert all(inputs.inadmissible(name, size) is None for size in sizes), name
        assert inputs.default_sizes(name)[-len(sizes) :] == list(sizes)
    assert inputs.default_sizes("googlenet_slim") == [224, 239, 97, 207]
    # the negative control: a size the variant cannot run is caught by the same check
    assert inputs.inadmissible("googlenet_slim", 239) is not None


def _parities(variant: str, size: int) -> tuple[int, ...]:
    """The parity of the map going into each stage that shrinks it (where ceil and floor
    rounding, and padding at the edge, can differ)."""
    shapes = [(0, size, size), *spec.stage_shapes(spec.resolve(variant), size).values()]
    return tuple(a[-1] % 2 for a, b in itertools.pairwise(shapes) if len(b) == 3 and b[-1] < a[-1])


def test_a_small_nets_own_odd_sizes_give_the_maps_the_odd_sizes_give_it():
    """``check.inputs.OWN_ODD_SIZES`` stand in for 239 and 97 at a small net's scale: the
    same odd and even maps into every stage that halves the map, at a fraction of the work."""
    for name, own in inputs.OWN_ODD_SIZES.items():
        assert {_parities(name, s) for s in own} == {_parities(name, s) for s in inputs.ODD_SIZES}, name
        assert all(inputs.inadmissible(name, s) is None for s in own), name  # else check would skip them
        assert inputs.default_sizes(name) == [spec.VARIANTS[name].input.size, *own]
    assert inputs.default_sizes("googlenet_cifar") == [32, 39, 33]
    # the negative control: 35 (35, 18, 9: odd, even, odd) misses 239's pattern
    assert {_parities("googlenet_cifar", s) for s in (35, 33)} != {
        _parities("googlenet_cifar", s) for s in inputs.ODD_SIZES
    }
