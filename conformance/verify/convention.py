"""The input convention: what a model takes for an image, channel by channel,
``input[c] = (pixel[order[c]] * scale - mean[c]) / std[c]`` of RGB pixels in 0-1.

The suite's seeded inputs stand for images in the reference's convention: the variant's
(its normalisation of RGB pixels in 0-1, :data:`NORMALISATION`), or, where the variant
has an input transform and the reference runs without it, what that transform makes
of the variant's (Caffe's BGR 0-255 less the mean pixel for googlenet_lrn). A user whose
model expects another (``--bgr``, ``--input-scale``, ``--input-mean``, ``--input-std``)
is fed the same images in theirs: each seeded input taken back to pixels in the
reference's convention, then into the user's. Plain numpy; no framework."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import spec
from ..spec.tables import IMAGENET_MEAN, IMAGENET_STD

CIFAR100_MEAN = (0.5070751592371323, 0.48654887331495095, 0.4409178433670343)  # pytorch-cifar100's settings.py
CIFAR100_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)
# Each variant's normalisation of RGB pixels in 0-1: ImageNet's statistics for the
# ImageNet networks, CIFAR-100's for pytorch-cifar100's; the one-channel networks (d2l's
# Fashion-MNIST, the lecture's MNIST) take the pixels as ToTensor gives them.
NORMALISATION = {"googlenet_cifar": (CIFAR100_MEAN, CIFAR100_STD)}
MAX_SCALE = 1e6  # an input scale beyond any pixel range (65535 for 16-bit images)


@dataclass(frozen=True)
class Convention:
    order: tuple[int, ...]  # the pixel channel each input channel reads (BGR: 2, 1, 0)
    scale: float  # pixels in 0-1 times this (255 for 8-bit pixels)
    mean: tuple[float, ...]  # subtracted after scaling, per input channel
    std: tuple[float, ...]  # divided by after that

    def describe(self) -> str:
        names = "RGB" if len(self.order) == 3 and self.order == (0, 1, 2) else "BGR" if len(self.order) == 3 else "gray"
        scale = "0-1" if self.scale == 1 else f"0-{self.scale:g}"
        return (
            f"{names} in {scale}, mean ({', '.join(f'{m:.3g}' for m in self.mean)}), "
            f"std ({', '.join(f'{s:.3g}' for s in self.std)})"
        )


def variant(p: spec.Plan) -> Convention:
    """What the reference of ``p`` takes: the variant's normalisation, or where the variant
    transforms its input and ``p`` does not, what the transform makes of it (the input
    the network itself reads)."""
    channels = p.in_channels
    default = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.0,) * channels, (1.0,) * channels)
    mean, std = NORMALISATION.get(p.variant.name, default)
    order = tuple(range(channels))
    t = p.variant.input.transform
    if t is None or p.options.transform_input:
        return Convention(order, 1.0, tuple(mean), tuple(std))
    # y[c] = x[o] * s + h with x[o] = (pixel[o] - mean[o]) / std[o]: (pixel[o] - mean') / std'
    return Convention(
        t.order,
        1.0,
        tuple(mean[o] - h * std[o] / s for o, s, h in zip(t.order, t.scale, t.shift, strict=True)),
        tuple(std[o] / s for o, s in zip(t.order, t.scale, strict=True)),
    )


def check(bgr: bool, scale: float | None, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """The options, before anything runs: ValueError naming the option."""
    if not isinstance(bgr, bool):
        raise ValueError(f"--bgr: expected True or False, got {bgr!r}")
    if scale is not None and (not _number(scale) or not 0 < scale <= MAX_SCALE):
        raise ValueError(
            f"--input-scale: expected a number above 0 and at most {MAX_SCALE:g} (255 for 0-255), got {scale!r}"
        )
    for option, values, positive in (("--input-mean", mean, False), ("--input-std", std, True)):
        if values is None:
            continue
        values = list(values)
        if len(values) not in (1, 3) or not all(_number(v) for v in values):
            raise ValueError(f"{option}: expected one number or three (one per channel), got {values!r}")
        if positive and not all(v > 0 for v in values):
            raise ValueError(f"{option}: expected numbers above 0, got {values!r}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_numbers(text: str) -> list[float]:
    """``--input-mean 104,117,123`` -> [104.0, 117.0, 123.0]; ValueError otherwise."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected numbers separated by commas, got {text!r}") from None


def user(
    reference: Convention,
    channels: int,
    bgr: bool,
    scale: float | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Convention | None:
    """The user's convention from the options (None where none was given: the
    reference's own). Giving any of scale, mean or std sets the normalisation (those not
    given are 1, 0 and 1); giving none keeps the variant's, in the user's channel order."""
    if not bgr and scale is None and mean is None and std is None:
        return None
    if bgr and channels != 3:
        raise ValueError(f"--bgr: your model takes {channels} input channel(s); BGR needs 3")
    for option, values in (("--input-mean", mean), ("--input-std", std)):
        if values is not None and len(values) not in (1, channels):
            raise ValueError(f"{option}: {len(values)} numbers; your model takes {channels} input channels")
    order = (2, 1, 0) if bgr else tuple(range(channels))
    if scale is None and mean is None and std is None:
        base = variant_normalisation(reference)
        return Convention(order, 1.0, tuple(base[0][o] for o in order), tuple(base[1][o] for o in order))
    return Convention(
        order,
        float(scale if scale is not None else 1.0),
        tuple(float(v) for v in (mean or [0.0])) * (channels if mean is None or len(mean) == 1 else 1),
        tuple(float(v) for v in (std or [1.0])) * (channels if std is None or len(std) == 1 else 1),
    )


def variant_normalisation(reference: Convention) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The reference's mean and std by pixel channel (R, G, B), whatever order it reads them in."""
    mean = [0.0] * len(reference.order)
    std = [1.0] * len(reference.order)
    for c, o in enumerate(reference.order):
        mean[o], std[o] = reference.mean[c] / reference.scale, reference.std[c] / reference.scale
    return tuple(mean), tuple(std)


def convert(x: np.ndarray, source: Convention, target: Convention) -> np.ndarray:
    """NCHW ``x`` in ``source``'s convention -> the same images in ``target``'s (float32)."""
    values = np.asarray(x, np.float64)
    pixels = np.empty_like(values)
    for c, o in enumerate(source.order):
        pixels[:, o] = (values[:, c] * source.std[c] + source.mean[c]) / source.scale
    out = np.stack(
        [(pixels[:, o] * target.scale - target.mean[c]) / target.std[c] for c, o in enumerate(target.order)], 1
    )
    return np.ascontiguousarray(out, np.float32)
