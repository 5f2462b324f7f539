"""``python -m conformance train``: train a variant in one framework, as d2l and
Hongpu Liu's lecture do.

SGD (momentum optional) on cross-entropy, plus 0.3 x each aux head's loss where the
variant has aux heads; a progress bar; per-epoch loss and train/test accuracy; a
canonical checkpoint after every epoch (written atomically, so any framework can
load it); and at the end a PNG plot of the curves, like d2l's animator draws them.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from .. import spec
from ..canonical import initial_params, save
from ..files import atomic_write
from ..interface import Backend
from .data import Split, load_idx, prepare, synthetic


class TrainingError(RuntimeError):
    """Training that cannot go on (a loss that is no longer finite)."""


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


def outputs(out: Path, variant: str, framework: str, epochs: int) -> list[Path]:
    """Every file a run writes: a checkpoint per epoch, the plot and the history."""
    stem = f"{variant}-{framework}"
    return [out / f"{stem}-epoch{e}.safetensors" for e in range(1, epochs + 1)] + [
        out / f"{stem}.png",
        out / f"{stem}.json",
    ]


def check_outputs(out: Path, variant: str, framework: str, epochs: int, force: bool) -> None:
    """Refuse before training, not after the first epoch, if a file would be overwritten."""
    if not out.is_dir():
        raise FileNotFoundError(f"--out {out}: directory does not exist")
    existing = [p for p in outputs(out, variant, framework, epochs) if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"--out {out}: {existing[0].name} already exists; pass --force to overwrite "
            f"({len(existing)} file{'s' if len(existing) > 1 else ''} would be replaced)"
        )


def load_data(data: str | Path | None, s: Settings) -> dict[str, Split]:
    splits = load_idx(data) if data is not None else synthetic(seed=s.seed)
    if s.limit is not None:
        splits = {k: Split(v.images[: s.limit], v.labels[: s.limit]) for k, v in splits.items()}
    return splits


def progress(done: int, total: int, loss: float, stream: TextIO) -> None:
    """A bar redrawn in place on a terminal; in a log, a line at each quarter."""
    tty = stream.isatty()
    if not tty and done not in {total * q // 4 for q in (1, 2, 3, 4)}:
        return
    width = 30
    filled = width * done // total
    stream.write(
        f"{chr(13) if tty else ''}  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
        f"loss {loss:.4f}{'' if tty else chr(10)}"
    )
    stream.flush()


def _check_labels(splits: dict[str, Split], classes: int) -> None:
    for name, split in splits.items():
        if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= classes):
            raise ValueError(
                f"--data: {name} labels run {split.labels.min()}..{split.labels.max()}, "
                f"the classifier has {classes} classes (see --num-classes)"
            )


def evaluate(backend: Backend, model, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    correct = sum(
        int((backend.forward(model, x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return correct / max(1, len(x))


def train(
    backend: Backend,
    s: Settings,
    splits: dict[str, Split],
    out: Path,
    force: bool = False,
    log: Callable[[str], None] = print,
    stream: TextIO = sys.stderr,
) -> list[Epoch]:
    """Train and write the outputs; returns the history."""
    check_outputs(out, s.variant, backend.name, s.epochs, force)
    v = spec.VARIANTS[s.variant]
    classes = s.num_classes or v.head.classes
    _check_labels(splits, classes)
    aux = v.aux is not None and spec.aux_admits(spec.resolve(v, aux_logits=True), v.input.size)
    model = backend.build(s.variant, num_classes=classes, aux_logits=aux)
    p = model.plan
    backend.from_canonical(model, initial_params(p, s.seed))  # the same start in every framework
    train_x = prepare(splits["train"].images, p.in_channels, v.input.size)
    test_x = prepare(splits["test"].images, p.in_channels, v.input.size)
    train_y, test_y = splits["train"].labels, splits["test"].labels
    trainer = backend.Trainer(model, lr=s.lr, momentum=s.momentum, aux_weight=s.aux_weight)
    rng = np.random.default_rng(s.seed)
    log(
        f"training {s.variant} in {backend.version()}: {len(train_x)} train / {len(test_x)} test images at "
        f"{p.in_channels} x {v.input.size} x {v.input.size}, SGD lr {s.lr} momentum {s.momentum}"
        + (f", aux losses x {s.aux_weight}" if aux else "")
    )
    history: list[Epoch] = []
    paths = outputs(out, s.variant, backend.name, s.epochs)
    for epoch in range(1, s.epochs + 1):
        order = rng.permutation(len(train_x))
        batches = [order[i : i + s.batch_size] for i in range(0, len(order), s.batch_size)]
        losses, correct, start = [], 0, time.perf_counter()
        for i, idx in enumerate(batches, 1):
            loss, right = trainer.step(train_x[idx], train_y[idx])
            if not np.isfinite(loss):
                raise TrainingError(
                    f"epoch {epoch}, batch {i}: the loss is {loss}; training diverged, try a smaller --lr than {s.lr}"
                )
            losses.append(loss)
            correct += right
            progress(i, len(batches), float(np.mean(losses)), stream)
        seconds = time.perf_counter() - start
        if stream.isatty():
            stream.write("\n")
        test_acc = evaluate(backend, model, test_x, test_y, s.batch_size)
        checkpoint = save(backend.to_canonical(model), paths[epoch - 1], p, overwrite=force)
        history.append(
            Epoch(
                epoch, float(np.mean(losses)), correct / len(train_x), test_acc, len(train_x) / seconds, str(checkpoint)
            )
        )
        e = history[-1]
        log(
            f"epoch {epoch}/{s.epochs}: loss {e.loss:.4f}, train acc {e.train_acc:.3f}, test acc {e.test_acc:.3f}"
            f" ({e.images_per_s:.0f} images/s); checkpoint {checkpoint}"
        )
    atomic_write(paths[-2], plot(history, f"{s.variant} ({backend.version()})"), overwrite=force)
    atomic_write(
        paths[-1],
        json.dumps(
            {"settings": asdict(s), "framework": backend.version(), "epochs": [asdict(e) for e in history]}, indent=1
        ).encode(),
        overwrite=force,
    )
    log(f"plot {paths[-2]}, history {paths[-1]}")
    return history


def plot(history: list[Epoch], title: str) -> bytes:
    """Two panels, as d2l's animator draws the curves: the training loss, and the train
    and test accuracy, per epoch (markers, so a single epoch shows too)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; and set before pyplot is imported
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    loss_ax.plot(epochs, [e.loss for e in history], "o-", label="train loss")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.plot(epochs, [e.train_acc for e in history], "s--", label="train acc")
    acc_ax.plot(epochs, [e.test_acc for e in history], "^-.", label="test acc")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.set_xticks(epochs if len(epochs) <= 12 else ax.get_xticks())
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
