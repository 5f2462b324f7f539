"""What the check runs: each variant's options, the input sizes it can and does run
(its own and the odd ones), the seeded inputs, and the refusal of work too large for
the memory, before any framework is imported."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import limits, spec

ODD_SIZES = (239, 97)  # besides each variant's own size: odd maps, where ceil and floor differ
DEFAULT_BATCH = 2

# A net made for small images has odd sizes at its own scale, with the maps that 239 and
# 97 give it: googlenet_cifar keeps its input's size until maxpool2, so at 239 it costs
# many times a GoogLeNet at 224 and tests nothing 39 does not.
OWN_ODD_SIZES: dict[str, tuple[int, ...]] = {
    # into maxpool2, 3 and 4: 39, 20, 10 and 33, 17, 9 (odd, even, even and odd, odd, odd),
    # as 239, 120, 60 and 97, 49, 25 are
    "googlenet_cifar": (39, 33),
}

# Sizes ``check`` runs besides a variant's own and the odd ones, where those leave a code
# path untested.
EXTRA_SIZES: dict[str, tuple[int, ...]] = {
    "googlenet_lrn": (231,),  # odd, with the aux heads (at 239 they get a 15 x 15 map and cannot run)
    "googlenet_slim": (207,),  # odd inside 193-224: SAME pads (3, 3) at 7x7/2 and (1, 1) at 3x3/2
}


def full_options(variant: spec.Variant) -> dict[str, Any]:
    """Options that exercise every parameter and code path the variant has (the variant's
    own number of classes)."""
    options: dict[str, Any] = {"aux_logits": variant.aux is not None}
    if variant.input.transform is not None:
        options["transform_input"] = True
    return options


def inadmissible(variant: str, size: int) -> str | None:
    """Why ``variant`` cannot run at ``size`` (too small, or a fixed pool that does not
    give fc its 1 x 1 map), or None."""
    try:
        spec.stage_shapes(spec.resolve(variant), size)
    except spec.SpecError as e:
        return str(e)
    return None


def check_input_sizes(variants: list[str], sizes: tuple[int, ...] | list[int]) -> None:
    """Fail fast, naming the option, on a size that none of the variants can run."""
    for size in sizes:
        reasons = [inadmissible(v, size) for v in variants]
        if all(reasons):
            raise spec.SpecError(f"--input-size {size}: no variant can run it: {variants[0]}: {reasons[0]}")


def check_work(variants: list[str], sizes: list[int] | None, batch: int, train: bool = False) -> None:
    """Refuse, before any framework is imported, a --batch whose activations at any size
    the check runs (each variant's own and the odd ones by default) exceed the memory."""
    for v in variants:
        plan = spec.resolve(v)
        for size in sizes or default_sizes(v):
            if inadmissible(v, size) is None:
                limits.check_work(limits.Work(plan, size, batch, size_option="--input-size" if sizes else None))
        if train:
            limits.check_work(limits.Work(plan, plan.input_size, batch, True, size_option=None))


def seeded_input(plan: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    """A seeded NCHW float32 batch of standard normal pixels, fixed by seed and size."""
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, plan.in_channels, size, size)).astype(np.float32)


def odd_sizes(variant: str) -> tuple[int, ...]:
    """The odd sizes ``check`` runs the variant at besides its own (``ODD_SIZES``, or the
    variant's own scale's), then any the variant adds."""
    return (*OWN_ODD_SIZES.get(variant, ODD_SIZES), *EXTRA_SIZES.get(variant, ()))


def default_sizes(variant: str) -> list[int]:
    """The variant's own input size, then its odd sizes."""
    return list(dict.fromkeys((spec.VARIANTS[variant].input.size, *odd_sizes(variant))))
