"""Honest numeric comparison of two frameworks' outputs.

Arrays are compared element by element in place: never sorted, never reduced first.
Both the largest absolute error and the largest error relative to the reference's
largest magnitude are reported; for logits, top-1 and top-5 agreement as well.

Tolerance: float32 has a unit roundoff of 2**-24 (6e-8). A conv or dense output is a
dot product of up to 2,048 terms (aux fc1; 1,728 in a 3x3 conv over 192 channels),
summed in an order each library chooses; its rounding error grows like
sqrt(terms) * 6e-8, about 3e-6 at worst per layer, and errors carried through the
~22 layers of the longest path are not amplified by ReLU or pooling (both
1-Lipschitz) nor, with these weights, by the convolutions. Measured across the three
frameworks: at most 3e-6 relative at any stage, 1e-6 on the logits. ``REL_TOL = 1e-4``
leaves 30x headroom over that, while the porting bugs of the negative controls
(shifted padding, a transposed kernel, Gluon's BatchNorm epsilon, unpermuted fc1
rows) move values by 1e-2 or more; a one-layer scale error of 2e-4 already fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REL_TOL = 1e-4
TOP_K = 5


@dataclass(frozen=True)
class Agreement:
    max_abs: float
    max_rel: float  # max |got - ref| / max |ref|
    top1: float | None = None  # fraction of images with the same top class
    top5: float | None = None  # fraction with the same top five, in the same order
    passed: bool = False
    ties: int = 0  # images whose top five differ only in the order of tied classes


def agreement(
    ref: np.ndarray, got: np.ndarray, logits: bool = False, rel_tol: float = REL_TOL, scale: float | None = None
) -> Agreement:
    """Compare ``got`` with ``ref`` (same shape); for ``logits`` also the top-k classes.
    ``scale``: the magnitude relative errors are measured against, where ``ref``'s own
    is no measure (a value that is exactly zero in exact arithmetic)."""
    if ref.shape != got.shape:
        raise ValueError(f"cannot compare shapes {got.shape} and {ref.shape}")
    max_abs, finite = _max_abs_diff(ref, got)
    if scale is None:
        scale = float(max(ref.max(), -ref.min())) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    passed = finite and max_rel <= rel_tol
    if not logits:
        return Agreement(max_abs, max_rel, passed=passed)
    # argsort is only used to name each image's top classes; the values compared above
    # are the raw, unsorted arrays. Two classes whose reference logits are within round-off
    # of each other (REL_TOL of the largest magnitude, whatever ``rel_tol`` a caller
    # loosened) are a tie: float arithmetic does not decide their order, so ranking them
    # the other way is no disagreement. Among a batch of thousands, some image has one.
    k = min(TOP_K, ref.shape[1])
    tie = REL_TOL * scale
    ref_top, got_top = _topk(ref, k), _topk(got, k)
    exact = ref_top == got_top
    # at each rank, the reference's logit for the class ``got`` puts there, against the
    # reference's own logit at that rank
    same = np.abs(np.take_along_axis(ref, got_top, 1) - np.take_along_axis(ref, ref_top, 1)) <= tie
    top1 = float(np.mean(same[:, 0]))
    top5 = float(np.mean(same.all(1)))
    ties = int(np.sum(same.all(1) & ~exact.all(1)))
    return Agreement(max_abs, max_rel, top1, top5, passed and top1 == 1.0 and top5 == 1.0, ties)


def percent(fraction: float | None) -> str:
    """``fraction`` as a percentage that never rounds a disagreement up to 100%
    (19,999 of 20,000 is 99.995%, shown as 99.99%) nor an agreement down to 0%; "-" for
    none (outputs that are not logits have no top-k)."""
    if fraction is None:
        return "-"
    if 0.99 < fraction < 1.0:
        return f"{np.floor(fraction * 1e4) / 100:.2f}%"
    if 0.0 < fraction < 0.01:
        return f"{np.ceil(fraction * 1e4) / 100:.2f}%"
    return f"{fraction:.0%}"


CHUNK = 1 << 18  # elements compared at a time: a 2 MB float64 buffer, which stays in cache


def _max_abs_diff(ref: np.ndarray, got: np.ndarray) -> tuple[float, bool]:
    """(max |got - ref| in float64, whether it is finite), a block at a time into one
    buffer: a whole 84 MB float32 stage would need 168 MB float64 temporaries, and the
    subtraction casts as it goes (twice as fast as casting each side first). A NaN or an
    infinity in ``got`` gives a NaN or an infinite difference, so it is never missed."""
    r, g = ref.reshape(-1), got.reshape(-1)
    buffer = np.empty(min(CHUNK, r.size), np.float64)
    max_abs = 0.0
    for i in range(0, r.size, CHUNK):
        d = buffer[: min(CHUNK, r.size - i)]
        np.subtract(g[i : i + CHUNK], r[i : i + CHUNK], out=d, dtype=np.float64)
        worst = float(np.abs(d, out=d).max())
        if np.isnan(worst):
            return worst, False
        max_abs = max(max_abs, worst)
    return max_abs, bool(np.isfinite(max_abs))


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Keys whose arrays are not bit-identical (names, order of keys, dtype, shape, bytes)."""
    bad = [
        k
        for k in a
        if k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()
    ]
    bad += [k for k in b if k not in a]
    if not bad and list(a) != list(b):
        bad.append("<key order>")
    return bad
