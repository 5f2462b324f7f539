"""The images a run trains and tests on (:mod:`.data` reads them), checked against its
settings: at most --limit of each split, a file's image count bounded by the memory the
prepared images take, no empty split, labels the classifier has."""

from __future__ import annotations

from pathlib import Path

from .. import limits, spec
from .data import DataError, MaxItems, Split, load_idx, synthetic
from .settings import Settings, plan_of

# Training holds every image prepared (float32 at the variant's size) in memory: beyond
# this, --limit (a full Fashion-MNIST at googlenet_d2l's 96 x 96 fits; docs/limits.md).
MAX_PREPARED = 4 << 30


# float32 copies of an image at its file's size that preparing it holds at once (the
# conversion and the normalisation), before the resize to the variant's size.
RAW_COPIES = 2


def load_data(data: str | Path | None, s: Settings) -> dict[str, Split]:
    """The splits (at most ``limit`` images each), checked to be trainable: images of at
    least one pixel, a training set and a test set that are not empty."""
    splits = load_idx(data, s.limit, max_images(plan_of(s))) if data is not None else synthetic(seed=s.seed)
    if s.limit is not None:
        splits = {k: Split(v.images[: s.limit], v.labels[: s.limit]) for k, v in splits.items()}
    where = f"--data {data}" if data is not None else "generated data"
    for name, split in splits.items():
        if split.images.ndim != 3 or 0 in split.images.shape[1:]:
            raise DataError(f"{where}: {name} images are {' x '.join(map(str, split.images.shape[1:]))} pixels")
        if not len(split.images):
            why = "nothing to train on" if name == "train" else "the test accuracy needs at least one image"
            raise DataError(f"{where}: the {name} set holds no images; {why}")
    return splits


def max_images(p: spec.Plan) -> MaxItems:
    """How many images of a shape a data file may hold: their side is bounded by the
    size they are resized to, their prepared bytes by ``MAX_PREPARED``."""

    def most(item: tuple[int, ...]) -> int:
        per_image = p.in_channels * p.input_size**2 * limits.FLOAT32
        if item:  # an image's rows x cols (labels have no shape)
            limits.check_image_side(item[0], item[1], p.input_size)
            per_image += RAW_COPIES * limits.FLOAT32 * item[0] * item[1]
        return MAX_PREPARED // per_image

    return most


def check_labels(splits: dict[str, Split], classes: int) -> None:
    for name, split in splits.items():
        if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= classes):
            raise ValueError(
                f"--data: {name} labels run {split.labels.min()}..{split.labels.max()}, "
                f"the classifier has {classes} classes (see --num-classes)"
            )
