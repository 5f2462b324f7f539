"""The units a plan is made of: a variant's rows resolved into named convs, pools,
blocks and dense layers (``conformance.spec.plan`` makes them), and the plan itself.
Data only, so the shape arithmetic (``shapes``) and the resolution (``plan``) both build
on it without importing each other."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from .rows import LRN, AdaptiveAvgPool, BatchNormSettings, InputTransform, Pool, ReLU, Variant


class SpecError(ValueError):
    """A variant name, option or input size that the spec cannot honour."""


# The most classes a classifier may have. The largest label sets GoogLeNet is trained on
# (ImageNet-21k: 21,841; JFT, Open Images, iNaturalist: under 20,000) fit with room;
# beyond, a checkpoint or option is taken as a mistake or an attack: a file that
# declares 500,000 classes would make every reader allocate gigabytes.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Options:
    """How a variant is built: the classifier's classes, the aux heads, the input transform."""

    num_classes: int
    aux_logits: bool = False
    transform_input: bool = False

    def asdict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ConvUnit:
    """Conv (+ BatchNorm) (+ ReLU); ``name`` is the canonical prefix, e.g.
    ``inception3a.branch2.1`` owns ``inception3a.branch2.1.conv.weight``. A ``plain``
    unit is a bare conv, as Liu's lecture writes it: ``incep1.branch1x1.weight``."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    norm: BatchNormSettings | None
    bias: bool
    relu: bool = True
    plain: bool = False
    same: bool = False  # TensorFlow's SAME padding (``padding`` unused), ``conformance.spec.same_pads``

    def __post_init__(self) -> None:
        if self.plain and self.norm is not None:
            raise SpecError(f"{self.name}: a plain conv has no BatchNorm")


@dataclass(frozen=True)
class Dense:
    """Fully connected layer. ``flattened_from`` is the (C, H, W) map it reads after a
    flatten, in PyTorch's (C, H, W) order; None when it reads a plain vector."""

    name: str
    in_features: int
    out_features: int
    flattened_from: tuple[int, int, int] | None = None


PoolUnit = Pool | AdaptiveAvgPool
Op = ConvUnit | PoolUnit


@dataclass(frozen=True)
class InceptionUnit:
    """Four parallel branches, concatenated on channels."""

    name: str
    in_channels: int
    branches: tuple[tuple[Op, ...], ...]

    @property
    def out_channels(self) -> int:
        return sum(_chain_out(b, self.in_channels) for b in self.branches)

    def modules(self) -> tuple[tuple[tuple[str, tuple[Op, ...]], ...], ...]:
        """Each branch as the block's attributes it runs through, in order, with the ops of
        each: torchvision's ``branch2`` holds ops ``branch2.0``, ``branch2.1`` (a sequence),
        ``branch1`` a single op; Liu's ``branch5x5_1``, ``branch5x5_2`` one op each."""
        out = []
        for branch in self.branches:
            attrs: dict[str, list[Op]] = {}
            for op in branch:
                attrs.setdefault(op.name[len(self.name) + 1 :].split(".")[0], []).append(op)
            out.append(tuple((attr, tuple(ops)) for attr, ops in attrs.items()))
        return tuple(out)


@dataclass(frozen=True)
class ResidualUnit:
    """``relu(x + conv2(conv1(x)))``; conv1 has its ReLU, conv2 none."""

    name: str
    conv1: ConvUnit
    conv2: ConvUnit

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels


Stage = ConvUnit | PoolUnit | InceptionUnit | LRN | ReLU | ResidualUnit


@dataclass(frozen=True)
class InceptionAuxUnit:
    name: str  # aux1, aux2
    tap: str  # the stage whose output it reads
    pool: PoolUnit
    conv: ConvUnit
    fc1: Dense
    fc2: Dense
    dropout: float
    pooled: int


@dataclass(frozen=True)
class Plan:
    variant: Variant
    options: Options
    stages: tuple[Stage, ...]
    aux: tuple[InceptionAuxUnit, ...]  # empty unless options.aux_logits
    fc: Dense
    dropout: float
    head_pool: PoolUnit | None  # None: fc reads the last map flattened
    transform: InputTransform | None = None  # set when options.transform_input

    @property
    def in_channels(self) -> int:
        return self.variant.input.channels

    @property
    def input_size(self) -> int:
        return self.variant.input.size

    @property
    def num_classes(self) -> int:
        return self.options.num_classes

    def aux_for(self, stage: str) -> tuple[InceptionAuxUnit, ...]:
        return tuple(a for a in self.aux if a.tap == stage)

    def units(self) -> Iterator[ConvUnit | Dense]:
        """Every parametrised unit in canonical (torchvision state_dict) order: the
        trunk's conv units, then each aux head's conv, fc1, fc2, then fc."""
        for stage in self.stages:
            if isinstance(stage, ConvUnit):
                yield stage
            elif isinstance(stage, InceptionUnit):
                for branch in stage.branches:
                    yield from (op for op in branch if isinstance(op, ConvUnit))
            elif isinstance(stage, ResidualUnit):
                yield from (stage.conv1, stage.conv2)
        for head in self.aux:
            yield from (head.conv, head.fc1, head.fc2)
        yield self.fc

    def conv_units(self) -> Iterator[ConvUnit]:
        return (u for u in self.units() if isinstance(u, ConvUnit))


def _chain_out(ops: tuple[Op, ...], in_channels: int) -> int:
    for op in ops:
        if isinstance(op, ConvUnit):
            in_channels = op.out_channels
    return in_channels
