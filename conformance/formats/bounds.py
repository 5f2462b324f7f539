"""What a checkpoint of a plan may declare, checked before any tensor is read.

A file describes its tensors before holding them (headers, zip directories, HDF5
dataset shapes, a pickle's tensor shapes over lazily mapped storage). Those
declarations are checked here against the spec: every tensor must have the shape the
plan gives its name, a classifier at most ``spec.MAX_CLASSES`` classes, and a dtype that
can be a weight. Only then is anything allocated, so reading a file costs what the
variant needs, whatever the file claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import spec
from ..canonical import canonical_shapes, describe
from ..reading import Tensor

FLOATS = {"float16", "float32", "float64"}  # any byte order; bfloat16 is converted where read


class BoundsError(ValueError):
    """A declaration the plan cannot contain (a PortError once the file is named)."""


@dataclass(frozen=True)
class Budget:
    """Bytes and counts a checkpoint of the plan can need, with room for float64 files,
    a classifier stored twice (GluonCV) and counters (``num_batches_tracked``)."""

    tensor: int  # the largest tensor, in float64
    total: int  # every tensor twice over, in float64, plus 1 MB of headers
    count: int  # tensors

    def describe(self) -> str:
        return f"{self.total / 1e6:.0f} MB"


def full(plan: spec.Plan) -> spec.Plan:
    """The plan with its aux heads where the variant has them (a file may hold them)."""
    return plan if plan.aux or plan.variant.aux is None else spec.with_options(plan, aux_logits=True)


def budget(plan: spec.Plan, classes: int | None = None) -> Budget:
    """What a file of ``p`` (with aux heads), or of ``classes`` classes, can need."""
    q = full(plan) if classes is None else spec.with_options(full(plan), num_classes=classes)
    sizes = [int(np.prod(s)) * 8 for s in canonical_shapes(q).values()]
    return Budget(max(sizes), 2 * sum(sizes) + (1 << 20), 3 * len(sizes) + 16)


def ceiling(plan: spec.Plan) -> Budget:
    """The budget at ``spec.MAX_CLASSES`` classes: what a file of any class count may
    declare before its shapes are compared (so that a file with another class count
    is told to pass ``--num-classes``, not refused as too big)."""
    return budget(plan, max(plan.num_classes, spec.MAX_CLASSES))


def dtype_name(tensor: Tensor) -> str:
    return tensor.dtype if isinstance(tensor.dtype, str) else np.dtype(tensor.dtype).name


def check(src: Path, plan: spec.Plan, declared: Mapping[str, Tensor]) -> None:
    """Every key of ``p`` present, none extra, each shape exact, each dtype a float
    (the wording of ``canonical.validate``, which checks the loaded arrays again)."""
    for key, t in declared.items():  # a tensor no reader may touch, whatever its name
        if t.problem:
            raise BoundsError(f"{src}: refusing to read: {key!r} is {t.problem}")
    expected = canonical_shapes(plan)
    problems = [f"missing key {k!r} (expected shape {s})" for k, s in expected.items() if k not in declared]
    problems += [f"unexpected key {k!r} (shape {t.shape})" for k, t in declared.items() if k not in expected]
    problems += [
        f"shape mismatch at {k!r}: expected {expected[k]}, got {t.shape}" + (f" ({t.where})" if t.where else "")
        for k, t in declared.items()
        if k in expected and t.shape != expected[k]
    ]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise BoundsError(f"{src}: canonical parameters do not fit {describe(plan)}: " + "; ".join(problems[:8]) + more)
    for key, t in declared.items():
        if dtype_name(t) not in FLOATS | {"bfloat16"}:
            raise BoundsError(f"{src}: {key!r} is {dtype_name(t)}; expected floating-point weights")


def check_sizes(src: Path, declared: Mapping[str, Tensor], limit: Budget) -> None:
    """Before the names are even looked at: no tensor larger, not more of them, and not
    more bytes in all, than any file of this network can hold."""
    if len(declared) > limit.count:
        raise BoundsError(f"{src}: declares {len(declared):,} tensors; this network has at most {limit.count:,}")
    for key, t in declared.items():
        if t.nbytes > limit.tensor:
            where = f" ({t.where})" if t.where else ""
            raise BoundsError(
                f"{src}: {key!r}{where} declares {dtype_name(t)} {list(t.shape)} ({t.nbytes / 1e6:,.0f} MB); "
                f"no tensor of this network needs more than {limit.tensor / 1e6:,.0f} MB"
            )
    total = sum(t.nbytes for t in declared.values())
    if total > limit.total:
        raise BoundsError(
            f"{src}: its tensors declare {total / 1e6:,.0f} MB in all; no file of this network needs more than "
            f"{limit.total / 1e6:,.0f} MB"
        )
