"""``python -m conformance train``: train a variant in one framework, as d2l and
Hongpu Liu's lecture do.

SGD (momentum optional) on cross-entropy, plus 0.3 x each aux head's loss where the
variant has aux heads; a progress bar (:mod:`conformance.progress`); per-epoch loss and
train/test accuracy; a canonical checkpoint after every epoch (written atomically, so
any framework can load it); and at the end a PNG plot of the curves (:mod:`.plot`).

Interrupts. After every epoch the checkpoint, the JSON history and the run's state
(:mod:`.checkpoints`, :mod:`.state`) are on disk. SIGINT or SIGTERM keeps them, writes
the plot of the complete epochs and exits 130 / 143; ``--resume`` continues from the
last complete epoch and ends bit-identical to a run never interrupted: the data order
continues from the saved state, and the framework's own random numbers (dropout) are
seeded afresh at every epoch from ``--seed`` and the epoch's number, so they need no
saving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import files, interrupts, spec
from ..canonical import initial_params
from ..interface import Backend
from ..progress import Steps
from ..world import World, WorldError
from .checkpoints import Run, history_json
from .data import Split, prepare
from .dataset import check_labels
from .outputs import check_outputs, kept
from .plot import plot
from .settings import Epoch, Settings, plan_of


class TrainingError(RuntimeError):
    """Training that cannot go on (a loss that is no longer finite)."""


# Set before the framework is imported (``reproducible``): TensorFlow's oneDNN kernels
# pick their summation order at run time, so two runs of the same steps differ.
REPRODUCIBLE_ENVIRONMENT = {"keras": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def reproducible(framework: str) -> None:
    """Make ``framework``'s training repeat bit for bit, as far as it is decided before
    its import (the rest is ``Trainer(deterministic=True)``). A value the user set wins."""
    import os

    for name, value in REPRODUCIBLE_ENVIRONMENT.get(framework, {}).items():
        os.environ.setdefault(name, value)


def evaluate(backend: Backend, model, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the logits on ``x``, in inference mode."""
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = np.asarray(backend.forward(model, x[i : i + batch]), np.float64)
        labels = y[i : i + batch]
        correct += int((logits.argmax(1) == labels).sum())
        shifted = logits - logits.max(1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss -= float(log_softmax[np.arange(len(labels)), labels].sum())
    return correct / max(1, len(x)), loss / max(1, len(x))


def fingerprint(splits: dict[str, Split]) -> str:
    """SHA-256 of the data a run trains and tests on: a resumed run must see the same."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for array in (splits[name].images, splits[name].labels.astype("<i8")):
            h.update(f"{name}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def epoch_seed(seed: int, epoch: int) -> int:
    """The framework's random seed for one epoch (dropout), from --seed and the epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _say_nothing(line: str) -> None:
    """The log of a worker other than worker 0 (worker 0 says it for all)."""


def train(
    backend: Backend,
    s: Settings,
    splits: dict[str, Split],
    out: Path,
    force: bool = False,
    log: Callable[[str], None] = print,
    stream: TextIO = sys.stderr,
    resume: bool = False,
    world: World | None = None,
    engine: Any = None,
) -> list[Epoch]:
    """Train and write the outputs; returns the history. ``resume``: continue the run
    in ``out`` from its last complete epoch. ``engine``: the framework's data-parallel
    engine (``impl_*.distributed``, joined as ``world``): every worker runs this loop on
    the same global batches, and only worker 0 evaluates, logs and writes. ``log`` says
    each epoch's line (stdout by default); ``stream`` shows the batches' progress."""
    o = check_outputs(out, s, backend.name, force, resume)
    v = spec.VARIANTS[s.variant]
    classes = s.num_classes or v.head.classes
    check_labels(splits, classes)
    aux = plan_of(s).options.aux_logits
    with engine.scope() if engine else contextlib.nullcontext():
        model = backend.build(s.variant, num_classes=classes, aux_logits=aux)
    p = model.plan
    train_x = prepare(splits["train"].images, p.in_channels, v.input.size)
    test_x = prepare(splits["test"].images, p.in_channels, v.input.size)
    train_y, test_y = splits["train"].labels, splits["test"].labels
    options = {"lr": s.lr, "momentum": s.momentum, "aux_weight": s.aux_weight, "deterministic": True}
    trainer = engine.Trainer(model, **options, world=world) if engine else backend.Trainer(model, **options)
    rng = np.random.default_rng(s.seed)
    writer = world is None or world.rank == 0
    run = Run(o, s, p, backend.name, fingerprint(splits), writer=writer)
    if not writer:
        log = _say_nothing
    if o.start:
        history = run.resume(backend, model, trainer, rng)
    else:
        backend.from_canonical(model, initial_params(p, s.seed))  # the same start in every framework
        history = []
    log(
        f"training {s.variant} in {backend.version()}: {len(train_x)} train / {len(test_x)} test images at "
        f"{p.in_channels} x {v.input.size} x {v.input.size}, SGD lr {s.lr} momentum {s.momentum}"
        + (f", aux losses x {s.aux_weight}" if aux else "")
        + (f"; {world.workers} workers ({engine.ENGINE})" if engine and world else "")
        + (f"; resumed after epoch {o.start}" if o.start else "")
    )
    try:
        for epoch in range(o.start + 1, s.epochs + 1):
            with Steps("train", stream, quiet=not writer) as progress:
                e = _epoch(backend, model, trainer, rng, epoch, s, (train_x, train_y), progress)
            test_acc, test_loss = evaluate(backend, model, test_x, test_y, s.batch_size) if writer else (0.0, math.nan)
            e = dataclasses.replace(e, test_acc=test_acc, test_loss=test_loss, checkpoint=str(o.checkpoint(epoch)))
            # a signal waits until all three are done: the files on disk, the epochs an
            # interrupt reports as saved and the epochs the log shows can never disagree
            with interrupts.signals_held():
                with _saying_what_is_kept(run, s, backend, history, force):
                    run.save_epoch(backend, model, trainer, rng, [*history, e], force)
                    history.append(e)
                log(
                    f"epoch {epoch}/{s.epochs}: loss {e.loss:.4f}, train acc {e.train_acc:.3f}, test loss "
                    f"{e.test_loss:.4f}, test acc {e.test_acc:.3f}"
                    f" ({e.images_per_s:.0f} images/s); checkpoint {e.checkpoint}"
                )
    except (interrupts.Interrupted, KeyboardInterrupt, WorldError) as interrupt:
        _keep_on_interrupt(run, s, backend, history, force, interrupt)
        raise
    with _saying_what_is_kept(run, s, backend, history, force):
        run.write(o.plot, plot(history, f"{s.variant} ({backend.version()})", s), force)
        run.write(o.history, history_json(s, backend.version(), history), force)
    log(f"plot {o.plot}, history {o.history}")
    return history


def _epoch(backend, model, trainer, rng, epoch: int, s: Settings, data, progress: Steps) -> Epoch:
    """One pass over the training set in a new random order, each batch told to
    ``progress``; its test accuracy is filled in afterwards."""
    train_x, train_y = data
    trainer.reseed(epoch_seed(s.seed, epoch))
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
        progress.count(i, len(batches), f"epoch {epoch}/{s.epochs}, loss {np.mean(losses):.4f}", "batches")
    seconds = time.perf_counter() - start
    return Epoch(epoch, float(np.mean(losses)), correct / len(train_x), 0.0, len(train_x) / seconds, "")


@contextlib.contextmanager
def _saying_what_is_kept(run: Run, s: Settings, backend: Backend, history: list[Epoch], force: bool) -> Iterator[None]:
    """A write that failed (a full disk): the complete epochs' files are on disk (each
    epoch's state is written last and atomically), so the one line says which, writes
    their plot if it still can, and says how to go on."""
    try:
        yield
    except (files.OutputError, OSError) as e:
        failed = str(e) if isinstance(e, files.OutputError) else f"{e.filename}: {files.describe_os_error(e)}"
        if not history:
            raise files.OutputError(f"{failed}; no epoch was complete") from None
        what = "checkpoints, history"
        if run.writer:
            try:
                run.write(run.o.plot, plot(history, f"{s.variant} ({backend.version()}), stopped", s), force)
                what = "checkpoints, plot, history"
            except (files.OutputError, OSError):  # the same full disk, most likely
                what = "checkpoints, history; no plot, it could not be written either"
        raise files.OutputError(f"{failed}; {kept(history[-1].epoch, s.epochs, run.o.out, what)}") from None


def _keep_on_interrupt(run: Run, s: Settings, backend: Backend, history: list[Epoch], force: bool, e) -> None:
    """Write the plot of the complete epochs (their checkpoints, history and state are on
    disk already) and say how to go on."""
    done = history
    if done and run.writer:
        with interrupts.ignoring_signals():  # a second Ctrl-C must not cut the plot short
            run.write(run.o.plot, plot(done, f"{s.variant} ({backend.version()}), interrupted", s), force)
    # another worker (another host, on a cluster) says what worker 0 wrote, not that it wrote it
    what = "checkpoints, plot, history" + ("" if run.writer else ", written by worker 0 on its host")
    detail = kept(done[-1].epoch if done else 0, s.epochs, run.o.out, what)
    if isinstance(e, interrupts.Interrupted | WorldError):
        e.detail = detail
