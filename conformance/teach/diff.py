"""Where two models part: ``python -m conformance diff``.

Two checkpoints (any format ``port`` reads, read and checked exactly as ``port`` reads
them), or one checkpoint against the suite's seeded weights, loaded into one
framework; or one checkpoint in two frameworks (``--frameworks a,b``: what ``check``
does for the suite's weights, for a user's file). Both run the same seeded input; every
stage is compared with ``check``'s rule. The report names the first stage that
diverges, the error at every stage, and the tensors that differ most.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import frameworks, spec
from ..canonical import Params, canonical_shapes, random_params
from ..check.compare import REL_TOL, percent
from ..formats.base import PortError
from ..formats.port import read_checkpoint
from ..formats.registry import infer
from . import stages

DEFAULT_BATCH = 8
DEFAULT_TOP = 10
SEEDED = "seeded weights"


@dataclass
class Side:
    """One of the two models compared: where its weights come from, in which framework."""

    label: str  # a file name, or "seeded weights (seed 0)"
    plan: spec.Plan  # the plan its weights fit (aux heads as the file has them)
    params: Params
    framework: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class DiffResult:
    a: Side
    b: Side
    variant: str
    options: dict[str, Any]
    size: int
    batch: int
    seed: int
    rows: list[stages.StageDiff]
    tensors: list[stages.TensorDiff]  # differing tensors, largest relative difference first
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> stages.StageDiff | None:
        return stages.first_divergence(self.rows)

    @property
    def passed(self) -> bool:
        return self.first is None


def check_file(path: Path, name: str) -> None:
    if not path.exists():
        raise PortError(f"{name} {path}: no such file")
    if not path.is_file():
        raise PortError(f"{name} {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise PortError(f"{name} {path}: not readable")


def check_options(
    a: Path,
    b: Path | None,
    variant: str,
    framework: str,
    pair: list[str] | None,
    a_format: str | None,
    b_format: str | None,
    size: int | None,
) -> None:
    """Everything that can be refused without reading a checkpoint or importing a framework."""
    check_file(a, "A")
    infer(a, a_format, "--from")
    if b is not None:
        if pair is not None:
            raise PortError("--frameworks compares one checkpoint across two frameworks: give A only, not B")
        check_file(b, "B")
        infer(b, b_format, "--from-b")
    elif b_format is not None:
        raise PortError("--from-b: there is no B (without B, A is compared with the suite's seeded weights)")
    if pair is not None and len(pair) != 2:
        raise PortError(f"--frameworks: expected two frameworks, as torch,keras; got {','.join(pair)}")
    frameworks.parse([framework], "--framework")
    if size is not None:
        try:
            spec.stage_shapes(spec.resolve(variant), size)
        except spec.SpecError as e:
            raise PortError(f"--input-size {size}: {e}") from None


def _read(path: Path, fmt: str | None, variant: str, num_classes: int | None, transform: bool) -> Side:
    checkpoint = read_checkpoint(path, variant, fmt, num_classes, transform)
    notes = [f"{checkpoint.format.description}, {len(checkpoint.params)} tensors", *checkpoint.notes]
    return Side(str(path), checkpoint.plan, checkpoint.params, notes=notes)


def _common_plan(a: Side, b: Side) -> tuple[spec.Plan, str]:
    """The plan both fit: without aux heads when only one side has them (a note says so)."""
    if bool(a.plan.aux) == bool(b.plan.aux):
        return a.plan, ""
    p = spec.with_options(a.plan, aux_logits=False)
    keys = set(canonical_shapes(p))
    for side in (a, b):
        side.params = {k: v for k, v in side.params.items() if k in keys}
    return p, f"aux heads: only {a.label if a.plan.aux else b.label} has them; compared without"


def _backend(name: str, option: str) -> Any:
    found, skipped = frameworks.load([name])
    if name not in found:
        raise PortError(f"{option} {name}: {skipped[name]}")
    return found[name]


def diff(
    a: str | Path,
    b: str | Path | None,
    variant: str,
    framework: str = "torch",
    pair: list[str] | None = None,
    a_format: str | None = None,
    b_format: str | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
    size: int | None = None,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> DiffResult:
    """Compare two models stage by stage. Raises PortError on bad input."""
    a, b = Path(a), (None if b is None else Path(b))
    check_options(a, b, variant, framework, pair, a_format, b_format, size)
    side_a = _read(a, a_format, variant, num_classes, transform_input)
    for line in side_a.notes:
        log(f"read   A {a}: {line}" if line is side_a.notes[0] else f"       {line}")
    if b is not None:
        side_b = _read(b, b_format, variant, num_classes, transform_input)
        for line in side_b.notes:
            log(f"read   B {b}: {line}" if line is side_b.notes[0] else f"       {line}")
    elif pair is not None:
        side_b = Side(str(a), side_a.plan, side_a.params)
    else:
        side_b = Side(f"{SEEDED} (seed {seed})", side_a.plan, random_params(side_a.plan, seed))
    p, note = _common_plan(side_a, side_b)
    side_a.framework, side_b.framework = pair if pair is not None else (framework, framework)
    size = size or p.input_size
    backends = {
        fw: _backend(fw, "--frameworks" if pair else "--framework") for fw in dict.fromkeys(pair or [framework])
    }
    models = {}
    for key, side in (("a", side_a), ("b", side_b)):
        backend = backends[side.framework]
        models[key] = backend.build(p.variant.name, **p.options.asdict())
        backend.from_canonical(models[key], side.params)
    ra, rb = backends[side_a.framework], backends[side_b.framework]
    x = stages.seeded_input(p, size, batch, seed)
    rows = stages.compare_runs(
        lambda c: ra.stages(models["a"], c), lambda c: rb.stages(models["b"], c), x, stages.logit_stages(p)
    )
    if pair is not None:  # the same file: what each framework holds after loading it
        tensors = stages.tensor_diffs(ra.to_canonical(models["a"]), rb.to_canonical(models["b"]))
    else:
        tensors = stages.tensor_diffs(side_a.params, side_b.params)
    return DiffResult(
        side_a, side_b, variant, p.options.asdict(), size, batch, seed, rows, tensors, [note] if note else []
    )


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _e(v: float | None) -> str:
    return f"{v:8.1e}" if v is not None else f"{'-':>8}"


def _downstream(r: DiffResult, stage: str) -> list[stages.StageDiff]:
    """The rows that read ``stage``'s output: the trunk after it, and the aux heads that
    branch off at or after it (one that branches off before never sees the difference)."""
    trunk = [row.stage for row in r.rows]
    taps = {head.name: head.tap for head in r.a.plan.aux}
    start = trunk.index(stage)

    def reads(row: stages.StageDiff) -> bool:
        if row.stage in taps and row.stage != stage:
            return taps[row.stage] in trunk and trunk.index(taps[row.stage]) >= start
        return trunk.index(row.stage) >= start

    return [row for row in r.rows if reads(row)]


def render(r: DiffResult, top: int = DEFAULT_TOP) -> str:
    a, b = r.a, r.b
    who = (
        f"{a.label} in {a.framework} vs {b.framework}"
        if a.label == b.label
        else f"A {a.label} vs B {b.label}, both in {a.framework}"
    )
    options = ", ".join(f"{k}={v}" for k, v in r.options.items())
    p = spec.resolve(r.variant, **r.options)
    lines = [
        f"diff {who}",
        f"  {r.variant} ({options}); seeded input {r.batch} x {p.in_channels} x {r.size} x {r.size} (seed {r.seed}); "
        f"tolerance: max relative error <= {REL_TOL:.0e}, logits: identical top-1 and top-5",
        *(f"  {n}" for n in r.notes),
        f"  {'stage':<14} {'shape':<18} {'max abs':>8} {'max rel':>8}",
    ]
    first = r.first
    seen_first = False
    for row in r.rows:
        seen_first = seen_first or row is first
        mark = "PASS" if row.passed else "DIFFERS"
        if row is first:
            mark += "  <- first divergence"
        shape = "x".join(map(str, row.ref_shape or row.got_shape or ()))
        lines.append(f"  {row.stage:<14} {shape:<18} {_e(row.max_abs)} {_e(row.max_rel)}   {mark}")
        if row.note:
            lines.append(f"  {'':<14} {row.note}")
        if row.top1 is not None:
            lines.append(f"  {'':<14} top-1 {percent(row.top1)}, top-5 {percent(row.top5)} of {r.batch} images")
    if r.tensors:
        lines.append(f"tensors that differ most ({min(top, len(r.tensors))} of {len(r.tensors)} that differ):")
        width = max(len(t.key) for t in r.tensors[:top])
        lines.append(f"  {'key':<{width}} {'max abs':>8} {'max rel':>8}")
        lines += [f"  {t.key:<{width}} {_e(t.max_abs)} {_e(t.max_rel)}" for t in r.tensors[:top]]
    else:
        lines.append("tensors: all bit-identical")
    if first is None:
        lines.append(f"PASS: the two agree within {REL_TOL:.0e} at every stage")
    else:
        downstream = _downstream(r, first.stage)
        after = [row for row in downstream if not row.passed]
        lines.append(
            f"FAIL: they part at {first.stage}"
            + (f" (max rel {first.max_rel:.1e})" if first.max_rel is not None else f" ({first.note})")
            + f"; {len(after)} of the {len(downstream)} stages from there on differ"
        )
    return "\n".join(lines)
