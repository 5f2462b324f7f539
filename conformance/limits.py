"""How much work a command may ask of this machine: the one place every size and count
a user declares (``--input-size``, ``--batch``, ``--workers``, the
images and pixels of a data file) is bounded, before memory is taken for it and before
a framework is imported.

What a run costs comes from the spec alone: it gives the shape of every stage at any
input size, so the activations of a batch are known without building anything. What
the machine has is its memory (the cgroup's limit where one is set) and its cores.
The cost is an estimate from the stage outputs (the frameworks' own working memory is
not in the spec); the message says the largest value the estimate admits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import spec
from .frameworks import usable_cores

FLOAT32 = 4
GB = 1 << 30

# Copies of a batch's stage outputs a run holds at its peak. Inference (check, diff,
# pitfalls, bench): a run returns every stage's output at once, and as much again is
# taken by what the stages compute inside (branch outputs before their concatenation,
# each conv's output before its ReLU) and by the reference's outputs being compared.
# Training: the forward activations kept for the backward pass, their gradients, and
# the working memory of the step.
INFERENCE_COPIES = 2
TRAINING_COPIES = 3

# A worker process holds its framework (its libraries and the model) besides the data,
# before the first batch: about half a gigabyte (a torch worker less, a TensorFlow one more).
WORKER_BASE = 512 << 20

# Cgroup v2 and v1 files that cap this process's memory below the machine's.
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


class LimitError(ValueError):
    """A size or count beyond what this machine can hold: one line naming the option."""


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform without these names
        total = 1 << 62
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def image_elements(p: spec.Plan, size: int) -> int:
    """float32 values one image occupies across the input and every stage's output at
    ``size`` (SpecError if the plan cannot run it)."""
    shapes = spec.stage_shapes(p, size)
    return p.in_channels * size * size + sum(math.prod(chw) for chw in shapes.values())


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / (1 << 20):.0f} MB"


@dataclass(frozen=True)
class Work:
    """A batch of images through a variant: what is checked against the machine. The
    options are how the user declared the size and the batch (None: not an option of
    the command, the variant's own size or a fixed batch)."""

    p: spec.Plan
    size: int
    batch: int
    training: bool = False
    size_option: str | None = "--input-size"
    batch_option: str | None = "--batch"

    @property
    def per_image(self) -> int:
        copies = TRAINING_COPIES if self.training else INFERENCE_COPIES
        return copies * FLOAT32 * image_elements(self.p, self.size)

    @property
    def bytes(self) -> int:
        return self.batch * self.per_image


def check_work(work: Work, memory: int | None = None) -> None:
    """Refuse a batch whose activations cannot fit in ``memory`` (default: the machine's),
    naming the option to change and the largest value that fits."""
    memory = machine_memory() if memory is None else memory
    if work.bytes <= memory:
        return
    declared = [
        f"{option} {value:,}"
        for option, value in ((work.size_option, work.size), (work.batch_option, work.batch))
        if option is not None
    ]
    most = memory // work.per_image
    if most >= 1 and work.batch_option is not None:
        advice = f"pass {work.batch_option} {most:,} or fewer"
    else:
        smaller = f"pass a smaller {work.size_option}" if work.size_option else "it cannot run on this machine"
        advice = f"one image alone needs {_gb(work.per_image)}; {smaller}"
    images = f"{work.batch:,} image{'s' if work.batch > 1 else ''}"
    raise LimitError(
        f"{' with '.join(declared)}: {work.p.variant.name}'s {'training' if work.training else 'inference'} on "
        f"{images} of {work.size:,} x {work.size:,} needs about {_gb(work.bytes)} of activations, more than "
        f"this machine's {_gb(memory)}; {advice}"
    )


def check_size(p: spec.Plan, size: int, option: str = "--input-size", memory: int | None = None) -> None:
    """An input size alone (a table, a page): one image of it must fit in memory."""
    check_work(Work(p, size, 1, size_option=option, batch_option=None), memory)


def check_workers(workers: int, option: str = "--workers", per_worker: int = 0, memory: int | None = None) -> None:
    """Refuse more worker processes than cores (each engine's workers compute at once;
    more only take turns and memory), or than the memory holds at ``per_worker`` bytes
    each besides its framework."""
    have = usable_cores()
    if workers > have:
        raise LimitError(f"{option} {workers:,}: this machine runs {have} at once (its cores); pass at most {have}")
    memory = machine_memory() if memory is None else memory
    each = WORKER_BASE + per_worker
    if workers * each > memory:
        raise LimitError(
            f"{option} {workers:,}: each worker holds at least {_gb(each)} (its framework, the data and its "
            f"share of the batch), more than this machine's {_gb(memory)} for {workers}; "
            f"pass at most {max(1, memory // each)}"
        )


# A data file's images are resized (bilinear, 2 x 2 pixels read per output pixel) to the
# variant's input side: a side beyond this many times it is not an image of the data
# the variant trains on, and its pixels would cost memory for nothing.
MAX_SCALE = 4


def check_image_side(rows: int, cols: int, size: int) -> None:
    """Refuse images a data file declares larger than ``MAX_SCALE`` x the side (``size``)
    they are resized to, before they are read."""
    most = MAX_SCALE * size
    if max(rows, cols) > most:
        raise LimitError(
            f"images of {rows:,} x {cols:,} pixels; they are resized to the variant's {size} x {size}, "
            f"so at most {most:,} pixels a side ({MAX_SCALE} x) are read"
        )
