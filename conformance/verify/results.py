"""What ``verify`` finds: each stage's and output's agreement, the diagnosis, and the
whole result, whose fields are the JSON document's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..check.compare import REL_TOL


@dataclass(frozen=True)
class StageResult:
    name: str  # the spec's stage
    size: int  # the input it ran on
    module: str  # the user's module whose output it is
    max_abs: float
    max_rel: float
    passed: bool


@dataclass(frozen=True)
class OutputResult:
    name: str  # logits, aux1, aux2
    size: int
    max_abs: float
    max_rel: float
    top1: float | None
    top5: float | None
    passed: bool


@dataclass(frozen=True)
class LogitsResult:
    """The logits over every input size: the largest errors, the lowest agreement."""

    max_abs: float
    max_rel: float
    top1: float
    top5: float


@dataclass(frozen=True)
class DiagnosisResult:
    pitfalls: tuple[str, ...]
    max_rel: float
    where: tuple[str, ...]


@dataclass
class Result:
    variant: str
    framework: str
    agree: bool
    first_divergence: str | None
    stages: list[StageResult]
    logits: LogitsResult
    diagnosis: list[DiagnosisResult]
    outputs: list[OutputResult] = field(default_factory=list)  # logits and aux logits, per size
    options: dict[str, Any] = field(default_factory=dict)
    pairing: str = ""
    tensors: int = 0
    sizes: list[int] = field(default_factory=list)
    batch: int = 2
    seed: int = 0
    rel_tol: float = REL_TOL
    weights: str = "your model's own"
    also_fits: list[str] = field(default_factory=list)  # other variants whose tensors the model holds
    unexposed: list[str] = field(default_factory=list)  # spec stages the model shows no module output for
    input_convention: str = "the reference's"  # what your model was fed: the reference's inputs, or converted
    seconds: float = 0.0
