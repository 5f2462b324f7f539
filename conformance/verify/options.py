"""verify's options, checked before any framework is imported or any model run."""

from __future__ import annotations

from collections.abc import Sequence

from .. import spec
from ..check.inputs import inadmissible
from ..spec.shapes import SIZE_LIMIT

MAX_BATCH = 64  # seeded images per input: a googlenet_bn stage at 224 is 3.2 MB an image, kept twice
MAX_SIZES = 8  # input sizes per run: each is a forward pass of both models


def check_options(variant: str, input_sizes: Sequence[int] | None, batch: int, seed: int) -> None:
    """Refuse bad options before anything is imported or run, naming the option."""
    if variant != "auto" and variant not in spec.VARIANTS:
        raise ValueError(f"--variant: unknown {variant!r}; expected auto or one of {', '.join(spec.VARIANTS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch: expected an integer from 1 to {MAX_BATCH}, got {batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, got {seed!r}")
    sizes = list(input_sizes or [])
    if len(sizes) > MAX_SIZES:
        raise ValueError(f"--input-size: at most {MAX_SIZES} sizes, got {len(sizes)}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= SIZE_LIMIT:
            raise ValueError(f"--input-size: expected an integer from 1 to {SIZE_LIMIT}, got {size!r}")
    if variant != "auto":
        for size in sizes:
            reason = inadmissible(variant, size)
            if reason:
                raise ValueError(f"--input-size {size}: {reason}")
