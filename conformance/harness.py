"""The conformance check: one set of canonical weights, every installed framework.

For each variant: parameter counts (each framework's own API) against the spec,
bit-identical round trips, and, at each input size, every stage's shape against
the spec and its values against the reference framework.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from . import spec
from .canonical import random_params
from .compare import REL_TOL, Agreement, agreement, identical
from .interface import Backend

ODD_SIZES = (239, 97)  # besides each variant's own size: odd maps, where ceil and floor differ
DEFAULT_BATCH = 2


@dataclass
class StageRow:
    stage: str
    expected: tuple[int, ...] | None  # None: the framework produced a stage the spec lacks
    shapes: dict[str, tuple[int, ...] | None]
    agreement: dict[str, Agreement]  # every framework but the reference
    passed: bool


@dataclass
class SizeReport:
    size: int
    aux: bool  # whether the aux heads ran (the aux pool admits this size)
    stages: list[StageRow]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.stages)


@dataclass
class VariantReport:
    variant: str
    options: dict[str, object]
    counts: dict[str, tuple[int, int]]  # "spec" and each framework: (trainable, statistics)
    roundtrip: dict[str, list[str]]  # framework or chain -> keys that changed (empty: identical)
    sizes: list[SizeReport] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # framework -> what raised
    skipped_sizes: dict[int, str] = field(default_factory=dict)  # size -> why the variant cannot run it

    @property
    def counts_passed(self) -> bool:
        return all(c == self.counts["spec"] for c in self.counts.values())

    @property
    def passed(self) -> bool:
        return (self.counts_passed and not self.errors and all(not v for v in self.roundtrip.values())
                and all(s.passed for s in self.sizes))


@dataclass
class Report:
    frameworks: dict[str, str]  # name -> version
    skipped: dict[str, str]  # name -> reason and install hint
    reference: str | None
    batch: int
    seed: int
    rel_tol: float
    variants: list[VariantReport]
    timings: dict[str, dict[str, float]]  # framework -> phase -> seconds

    @property
    def passed(self) -> bool:
        return bool(self.frameworks) and all(v.passed for v in self.variants)


class Timer:
    """Seconds spent per framework and phase (build, load, forward, roundtrip)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, who: str, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            phases = self.seconds.setdefault(who, {})
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start


def full_options(variant: spec.Variant) -> dict[str, object]:
    """Options that exercise every parameter and code path the variant has."""
    options: dict[str, object] = {"aux_logits": variant.aux is not None}
    if variant.input_transform is not None:
        options["transform_input"] = True
    return options


def inadmissible(variant: str, size: int) -> str | None:
    """Why ``variant`` cannot run at ``size`` (too small, or a fixed pool that does not
    give fc its 1 x 1 map), or None."""
    try:
        spec.stage_shapes(spec.plan(spec.configure(variant)), size)
    except spec.SpecError as e:
        return str(e)
    return None


def check_input_sizes(variants: list[str], sizes: tuple[int, ...] | list[int]) -> None:
    """Fail fast, naming the option, on a size that none of the variants can run."""
    for size in sizes:
        reasons = [inadmissible(v, size) for v in variants]
        if all(reasons):
            raise spec.SpecError(f"--input-size {size}: no variant can run it: {variants[0]}: {reasons[0]}")


def _input(p: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, p.in_channels, size, size)).astype(np.float32)


def _compare_size(p: spec.Plan, size: int, batch: int, outs: Mapping[str, Mapping[str, np.ndarray]],
                  reference: str) -> SizeReport:
    expected = spec.expected_shapes(p, size, batch)
    names = list(expected) + [k for o in outs.values() for k in o if k not in expected]
    rows = []
    for stage in dict.fromkeys(names):
        want = expected.get(stage)
        shapes = {fw: (o[stage].shape if stage in o else None) for fw, o in outs.items()}
        passed = want is not None and all(s == want for s in shapes.values())
        agree: dict[str, Agreement] = {}
        ref = outs[reference].get(stage)
        for fw, o in outs.items():
            if fw == reference or ref is None or stage not in o or o[stage].shape != ref.shape:
                continue
            agree[fw] = agreement(ref, o[stage], logits=stage == "logits" or stage in
                                  {h.name for h in p.aux})
            passed = passed and agree[fw].passed
        rows.append(StageRow(stage, want, shapes, agree, passed))
    return SizeReport(size, spec.aux_admits(p, size), rows)


def check_variant(name: str, backends: Mapping[str, Backend], sizes: tuple[int, ...] | list[int], batch: int,
                  seed: int, timer: Timer) -> VariantReport:
    options = full_options(spec.VARIANTS[name])
    p = spec.plan(spec.configure(name, **options))  # type: ignore[arg-type]
    params = random_params(p, seed)
    report = VariantReport(name, options, {"spec": spec.count_params(p)}, {})
    models = {}
    for fw, b in backends.items():
        try:
            with timer(fw, "build"):
                model = b.build(name, **options)
            with timer(fw, "load"):
                b.from_canonical(model, params)
            models[fw] = model
            report.counts[fw] = tuple(b.count_params(model))  # type: ignore[assignment]
        except Exception as e:  # one framework's failure must not hide the others' results
            report.errors[fw] = f"{type(e).__name__}: {e}"
    if not models:
        return report
    reference = next(iter(models))
    for size in sizes:
        reason = inadmissible(name, size)
        if reason:
            report.skipped_sizes[size] = reason
            continue
        outs = {}
        for fw, model in models.items():
            try:
                with timer(fw, "forward"):
                    outs[fw] = backends[fw].stages(model, _input(p, size, batch, seed))
            except Exception as e:  # a broken port may fail to run at all: report it
                report.errors[f"{fw} at {size}"] = f"{type(e).__name__}: {e}"
        if outs:
            report.sizes.append(_compare_size(p, size, batch, outs, reference if reference in outs
                                              else next(iter(outs))))
    for fw, model in models.items():  # canonical -> framework -> canonical
        with timer(fw, "roundtrip"):
            report.roundtrip[fw] = identical(params, backends[fw].to_canonical(model))
    if len(models) > 1:  # torch -> keras -> mxnet -> torch, through each adapter
        chain = [*models, reference]
        current = params
        for fw in chain:
            with timer(fw, "roundtrip"):
                backends[fw].from_canonical(models[fw], current)
                current = backends[fw].to_canonical(models[fw])
        report.roundtrip[" -> ".join(chain)] = identical(params, current)
    return report


def default_sizes(variant: str) -> list[int]:
    """The variant's own input size, then the odd sizes."""
    return list(dict.fromkeys((spec.VARIANTS[variant].input_size, *ODD_SIZES)))


def run(variants: list[str], backends: Mapping[str, Backend], skipped: Mapping[str, str],
        sizes: tuple[int, ...] | list[int] | None = None, batch: int = DEFAULT_BATCH, seed: int = 0,
        timer: Timer | None = None) -> Report:
    """The full check. ``backends`` maps a framework name to its implementation package
    (or any object with the same functions, e.g. a deliberately broken port). ``sizes``:
    None checks each variant at :func:`default_sizes`."""
    if batch < 1:
        raise ValueError(f"--batch: expected a positive integer, got {batch}")
    timer = timer or Timer()
    reports = [check_variant(v, backends, sizes or default_sizes(v), batch, seed, timer) for v in variants]
    return Report({fw: b.version() for fw, b in backends.items()}, dict(skipped),
                  next(iter(backends), None), batch, seed, REL_TOL, reports, timer.seconds)
