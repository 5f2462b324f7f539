"""What a benchmark measures (variant, batch, size, runtimes, rounds), checked before any
framework is imported, and the modes each framework's trainer is measured in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import spec
from ..frameworks import FRAMEWORKS
from ..interface import MODE_SETS

ONNX = "onnx"  # ONNX Runtime on PyTorch's export: the runtime the others are measured against


@dataclass(frozen=True)
class Settings:
    variant: str = "googlenet_bn"
    batch: int = 8
    size: int = 224
    frameworks: tuple[str, ...] = (*FRAMEWORKS, ONNX)
    train: bool = False
    rounds: int = 5
    calls: int = 2  # timed calls per round
    modes: str = "all"  # "default": each framework's default and eager, not the compiled extras


# Each framework's Trainer as ``train`` runs it, and for Gluon also its imperative step
# (the Trainer hybridizes by default): the ratio says what hybridizing gains.
TRAIN_MODES: dict[str, dict[str, dict[str, Any]]] = {
    "torch": {"train": {}},
    "keras": {"train": {}},
    "mxnet": {"train": {}, "train imperative": {"hybridize": False}},
}


def check_settings(s: Settings) -> None:
    """Refuse bad options, naming them, before any framework is imported."""
    if s.variant not in spec.VARIANTS:
        raise ValueError(f"--variant: unknown {s.variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    for option, value in (("--batch", s.batch), ("--input-size", s.size), ("--rounds", s.rounds)):
        if value < 1:
            raise ValueError(f"{option}: expected a positive integer, got {value}")
    try:
        spec.stage_shapes(spec.resolve(s.variant), s.size)
    except spec.SpecError as e:
        raise spec.SpecError(f"--input-size {s.size}: {s.variant} cannot run it: {e}") from None
    if s.modes not in MODE_SETS:
        raise ValueError(f"--modes: expected one of {', '.join(MODE_SETS)}, got {s.modes!r}")
    unknown = [n for n in s.frameworks if n not in FRAMEWORKS and n != ONNX]
    if unknown or not s.frameworks:
        raise ValueError(
            f"--frameworks: unknown {unknown or list(s.frameworks)!r}; expected a comma-separated subset of "
            f"{','.join([*FRAMEWORKS, ONNX])}"
        )
