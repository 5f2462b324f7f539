"""Placeholder for the diagnosis (branch verify-diagnose writes the real one): the
pitfall catalogue replayed with the user's weights. Returns no finding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import spec
from ..check import compare


@dataclass(frozen=True)
class Finding:
    pitfalls: tuple[str, ...]  # one catalogue name, or two for a pair of mistakes
    max_rel: float  # logits' max rel between the user's logits and the reference run with these mistakes made
    where: tuple[str, ...]  # the plan stage where each mistake is made


def diagnose(
    plan: spec.Plan,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    rel_tol: float = compare.REL_TOL,
) -> list[Finding]:
    """The mistakes that reproduce ``got`` within ``rel_tol``, best first; [] if none."""
    return []
