"""Two runs of one network compared stage by stage: where they part, and by how much.

Shared by ``pitfalls`` (a correct port against a broken one) and ``diff`` (two
checkpoints, or one checkpoint in two frameworks). The rule is ``check``'s
(:mod:`conformance.check.compare`): max absolute error, max error relative to the
reference's largest magnitude, ``REL_TOL`` for every stage, and identical top-1 and
top-5 for logits. Large batches run in chunks, so memory stays that of a few images;
the figures are those of the whole batch (maxima over chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import spec
from ..check.compare import REL_TOL, agreement

Run = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # NCHW input -> every stage, NCHW
CHUNK = 16  # images per forward pass


def seeded_input(p: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    """Standard-normal NCHW float32 images, seeded as ``check`` seeds its inputs."""
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, p.in_channels, size, size)).astype(np.float32)


@dataclass
class StageDiff:
    """One stage of two runs: shapes, errors (None when the shapes differ), top-k for logits."""

    stage: str
    ref_shape: tuple[int, ...] | None  # None: the reference has no such stage
    got_shape: tuple[int, ...] | None
    max_abs: float | None = None
    max_rel: float | None = None
    top1: float | None = None
    top5: float | None = None
    classes: int | None = None  # logits: how many classes the reference's top-1 picks across the batch
    passed: bool = False

    @property
    def note(self) -> str:
        """Why there is no error figure, or ''."""
        if self.ref_shape is None or self.got_shape is None:
            return "only one run has this stage"
        if self.ref_shape != self.got_shape:
            return f"shape {_shape(self.got_shape)}, expected {_shape(self.ref_shape)}"
        return ""


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(map(str, s))


@dataclass
class _Acc:
    ref_shape: tuple[int, ...] | None = None
    got_shape: tuple[int, ...] | None = None
    max_abs: float = 0.0
    scale: float = 0.0
    finite: bool = True
    ref_rows: list[np.ndarray] = field(default_factory=list)  # logits only: kept for top-k
    got_rows: list[np.ndarray] = field(default_factory=list)


def _grow(shape: tuple[int, ...] | None, chunk: tuple[int, ...]) -> tuple[int, ...]:
    return chunk if shape is None else (shape[0] + chunk[0], *chunk[1:])


def compare_runs(ref: Run, got: Run, x: np.ndarray, logits: set[str], chunk: int = CHUNK) -> list[StageDiff]:
    """Run both on ``x`` (in chunks) and compare every stage, in the reference's order.
    ``logits``: the stages compared as logits (top-1 and top-5 as well)."""
    accs: dict[str, _Acc] = {}
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        a, b = ref(part), got(part)
        for name in dict.fromkeys([*a, *b]):
            acc = accs.setdefault(name, _Acc())
            ra, gb = a.get(name), b.get(name)
            if ra is not None:
                acc.ref_shape = _grow(acc.ref_shape, ra.shape)
            if gb is not None:
                acc.got_shape = _grow(acc.got_shape, gb.shape)
            if ra is None or gb is None or ra.shape != gb.shape:
                continue
            diff = np.abs(gb.astype(np.float64) - ra.astype(np.float64))
            acc.max_abs = max(acc.max_abs, float(diff.max()) if diff.size else 0.0)
            acc.scale = max(acc.scale, float(np.abs(ra).max()) if ra.size else 0.0)
            acc.finite = acc.finite and bool(np.isfinite(gb).all())
            if name in logits:
                acc.ref_rows.append(ra)
                acc.got_rows.append(gb)
    return [_finish(name, acc, name in logits) for name, acc in accs.items()]


def _finish(name: str, acc: _Acc, is_logits: bool) -> StageDiff:
    row = StageDiff(name, acc.ref_shape, acc.got_shape)
    if acc.ref_shape is None or acc.ref_shape != acc.got_shape:
        return row
    if is_logits:  # the whole batch at once: top-k is per image
        ref = np.concatenate(acc.ref_rows)
        a = agreement(ref, np.concatenate(acc.got_rows), logits=True)
        row.max_abs, row.max_rel, row.top1, row.top5, row.passed = a.max_abs, a.max_rel, a.top1, a.top5, a.passed
        row.classes = len(np.unique(ref.argmax(1)))
        return row
    # compare.agreement's rule, from the maxima over chunks
    row.max_abs = acc.max_abs
    row.max_rel = acc.max_abs / acc.scale if acc.scale > 0 else (0.0 if acc.max_abs == 0 else float("inf"))
    row.passed = acc.finite and row.max_rel <= REL_TOL
    return row


def first_divergence(rows: list[StageDiff]) -> StageDiff | None:
    """The first stage that fails the tolerance (or whose shape differs), or None."""
    return next((r for r in rows if not r.passed), None)


def logit_stages(p: spec.Plan) -> set[str]:
    return {"logits", *(h.name for h in p.aux)}


@dataclass(frozen=True)
class TensorDiff:
    key: str
    max_abs: float
    max_rel: float  # to the largest magnitude of the first tensor


def tensor_diffs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> list[TensorDiff]:
    """Every key both hold whose values differ, the largest relative difference first."""
    out = []
    for key in a:
        if key not in b or a[key].shape != b[key].shape:
            continue
        d = agreement(np.asarray(a[key]), np.asarray(b[key]))
        if d.max_abs > 0 or not np.array_equal(a[key], b[key], equal_nan=True):
            out.append(TensorDiff(key, d.max_abs, d.max_rel))
    return sorted(out, key=lambda t: -t.max_rel)
