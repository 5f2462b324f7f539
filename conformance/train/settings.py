"""What a training run is: its settings, the record of one epoch, the plan it trains,
and the checks of --batch and --workers against the machine."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import limits, spec
from .data import Split

# Checkpoints are written after every epoch (53 MB each for googlenet): 10,000 epochs is
# beyond any schedule in d2l, Liu's lecture or the paper (tens to a few hundred epochs).
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class Settings:
    variant: str
    epochs: int = 10
    batch_size: int = 64  # Liu's lecture
    lr: float = 0.01  # Liu's Inception net: SGD(lr=0.01, momentum=0.5)
    momentum: float = 0.5
    aux_weight: float = 0.3  # the paper's weight of each aux loss
    limit: int | None = None  # use only the first N training and test images
    seed: int = 0
    num_classes: int | None = None  # None: the variant's own


@dataclass(frozen=True)
class Epoch:
    epoch: int
    loss: float  # mean over the epoch's batches, as d2l and Liu print it
    train_acc: float  # training-mode predictions during the epoch (d2l's "train acc")
    test_acc: float
    images_per_s: float
    checkpoint: str
    test_loss: float = math.nan  # cross-entropy of the logits on the test set (eval mode)


def plan_of(s: Settings) -> spec.Plan:
    """The plan a run trains: the variant with --num-classes, and its aux heads where
    the variant's own input size admits them."""
    v = spec.VARIANTS[s.variant]
    aux = v.aux is not None and spec.aux_admits(spec.resolve(v, aux_logits=True), v.input.size)
    return spec.resolve(v, s.num_classes, aux_logits=aux)


def check_work(s: Settings, splits: dict[str, Split] | None = None, workers: int = 1) -> None:
    """--batch against the machine (the training activations of one batch at the
    variant's size); with ``splits``, --workers too: each worker holds every prepared
    image and its shard of the batch."""
    p = plan_of(s)
    limits.check_work(limits.Work(p, p.input_size, s.batch_size, True, size_option=None, batch_option="--batch"))
    if splits is not None and workers > 1:
        images = sum(len(split.images) for split in splits.values())
        shard = -(-s.batch_size // workers)
        prepared = images * p.in_channels * p.input_size**2 * limits.FLOAT32
        limits.check_workers(workers, per_worker=prepared + limits.Work(p, p.input_size, shard, training=True).bytes)
