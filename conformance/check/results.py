"""What a check found, as data: a row per stage or trained quantity, a report per input
size, per variant and for the whole run, and the seconds each framework spent per
phase. ``check.report`` renders these; ``--json`` writes them as they are."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .compare import Agreement


@dataclass
class StageRow:
    stage: str
    expected: tuple[int, ...] | None  # None: the framework produced a stage the spec lacks
    shapes: dict[str, tuple[int, ...] | None]  # each run (a framework, or "framework mode")
    agreement: dict[str, Agreement]  # every run but the one it is compared with
    passed: bool


@dataclass
class SizeReport:
    size: int
    aux: bool  # whether the aux heads ran (the aux pool admits this size)
    stages: list[StageRow]  # each framework's eager run, and each judge, against the reference
    modes: list[StageRow] = field(default_factory=list)  # "framework mode" against its eager run

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.stages) and all(r.passed for r in self.modes)


@dataclass
class TrainRow:
    """One quantity of the training-parity check, worst key first: e.g. the gradients."""

    quantity: str
    keys: int  # how many tensors were compared
    worst: dict[str, str]  # framework -> the key with the largest relative error
    agreement: dict[str, Agreement]  # every framework but the reference: its worst key
    passed: bool


@dataclass
class VariantReport:
    variant: str
    options: dict[str, Any]
    counts: dict[str, tuple[int, int]]  # "spec" and each framework: (trainable, statistics)
    roundtrip: dict[str, list[str]]  # framework or chain -> keys that changed (empty: identical)
    sizes: list[SizeReport] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # framework -> what raised
    skipped_sizes: dict[int, str] = field(default_factory=dict)  # size -> why the variant cannot run it
    training: list[TrainRow] = field(default_factory=list)  # check --train
    unsupported: dict[str, str] = field(default_factory=dict)  # "judge at size" -> what its exporter lacks

    @property
    def counts_passed(self) -> bool:
        return all(c == self.counts["spec"] for c in self.counts.values())

    @property
    def passed(self) -> bool:
        return (
            self.counts_passed
            and not self.errors
            and all(not v for v in self.roundtrip.values())
            and all(s.passed for s in self.sizes)
            and all(r.passed for r in self.training)
        )


@dataclass
class Report:
    frameworks: dict[str, str]  # name -> version
    skipped: dict[str, str]  # name -> reason and install hint
    reference: str | None
    batch: int
    seed: int
    rel_tol: float
    variants: list[VariantReport]
    timings: dict[str, dict[str, float]]  # framework -> phase (or mode) -> seconds
    modes: dict[str, list[str]] = field(default_factory=dict)  # framework -> its modes, the default first
    judges: list[str] = field(default_factory=list)  # which of the frameworks are judges

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
