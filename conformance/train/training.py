"""``python -m conformance train``: train a variant in one framework, as d2l and
Hongpu Liu's lecture do.

SGD (momentum optional) on cross-entropy, plus 0.3 x each aux head's loss where the
variant has aux heads; a progress bar; per-epoch loss and train/test accuracy; a
canonical checkpoint after every epoch (written atomically, so any framework can
load it); and at the end a PNG plot of the curves, like d2l's animator draws them.

Interrupts. After every epoch the checkpoint, the JSON history and the run's state
(``<variant>-<framework>.state.safetensors``: the optimizer's momentum, the data
order's random state, the history, the options and a fingerprint of the data) are on
disk. SIGINT or SIGTERM keeps them, writes the plot of the complete epochs and exits
130 / 143; ``--resume`` continues from the last complete epoch and ends bit-identical to
a run never interrupted: the data order continues from the saved state, and the
framework's own random numbers (dropout) are seeded afresh at every epoch from
``--seed`` and the epoch's number, so they need no saving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import files, interrupts, limits, spec
from ..canonical import CanonicalError, canonical_shapes, initial_params, load_with_metadata, save
from ..files import atomic_write
from ..interface import Backend
from ..reading import json_document, safetensors
from ..world import World, WorldError
from .data import DataError, MaxItems, Split, load_idx, prepare, synthetic

# Checkpoints are written after every epoch (53 MB each for googlenet): 10,000 epochs is
# beyond any schedule in d2l, Liu's lecture or the paper (tens to a few hundred epochs).
MAX_EPOCHS = 10_000
STATE_FORMAT = "googlenet-train-state"
# Training holds every image prepared (float32 at the variant's size) in memory: beyond
# this, --limit (a full Fashion-MNIST at googlenet_d2l's 96 x 96 fits; docs/limits.md).
MAX_PREPARED = 4 << 30
# float32 copies of an image at its file's size that preparing it holds at once (the
# conversion and the normalisation), before the resize to the variant's size.
RAW_COPIES = 2


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
    test_loss: float = math.nan  # cross-entropy of the logits on the test set (eval mode)


@dataclass
class Outputs:
    """Where a run writes, and what it found there (``check_outputs``)."""

    out: Path
    stem: str
    start: int = 0  # complete epochs of the run being resumed
    replaceable: set[Path] = field(default_factory=set)  # existing files this run may replace

    def checkpoint(self, epoch: int) -> Path:
        return self.out / f"{self.stem}-epoch{epoch}.safetensors"

    @property
    def plot(self) -> Path:
        return self.out / f"{self.stem}.png"

    @property
    def history(self) -> Path:
        return self.out / f"{self.stem}.json"

    @property
    def state(self) -> Path:
        return self.out / f"{self.stem}.state.safetensors"


def _existing_checkpoints(out: Path, stem: str) -> dict[int, Path]:
    """Epoch -> checkpoint file of ``stem`` already in ``out`` (one directory listing,
    whatever --epochs says)."""
    pattern = re.compile(rf"{re.escape(stem)}-epoch(\d+)\.safetensors")
    found = {}
    for entry in out.iterdir():
        m = pattern.fullmatch(entry.name)
        if m:
            found[int(m[1])] = entry
    return found


def _make_out(out: Path) -> None:
    """Make a missing --out (and its missing parents), as the frameworks' own tools do,
    once the nearest existing parent is known to be a directory that may be written."""
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir():
        raise files.OutputError(f"--out {out}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise files.OutputError(f"--out {out}: cannot create it, {parent} is not writable")
    try:
        out.mkdir(parents=True)
    except OSError as e:
        raise files.OutputError(f"--out {out}: cannot create it ({e.strerror})") from None


def check_outputs(out: Path, s: Settings, framework: str, force: bool, resume: bool = False) -> Outputs:
    """Refuse before training, not after the first epoch: a missing or unwritable
    --out, a file of an earlier run that would be overwritten (without ``force``), not
    enough free space for the checkpoints; with ``resume``, a run that is not there or
    was started with other options. Returns the outputs and the epoch to start after."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise files.OutputError(f"--out {out}: not a directory")
    if not out.exists():
        if resume:
            raise files.OutputError(f"--out {out}: directory does not exist, so there is no run to resume")
        _make_out(out)
    o = Outputs(out, f"{s.variant}-{framework}")
    files.check_output(o.state, True, "--out")  # first: names a temporary a killed run left, in every run
    found = _existing_checkpoints(out, o.stem)
    checkpoints = {e: p for e, p in found.items() if e <= s.epochs}
    if resume:
        if o.state.exists() or o.state.is_symlink():
            run, o.start = _resumable(o, s)
            # this run's own later checkpoints (an interrupt between a checkpoint and the state)
            o.replaceable = {p for e, p in checkpoints.items() if e > o.start and _run_of(p) == run}
        else:
            o.replaceable = _restartable(o, s, found)
        checkpoints = {e: p for e, p in checkpoints.items() if e > o.start and p not in o.replaceable}
        o.replaceable |= {o.plot, o.history, o.state}
    fixed = [o.plot, o.history, o.state] if not resume else []
    existing = sorted(checkpoints.values()) + [p for p in fixed if p.exists() or p.is_symlink()]
    if existing and not force:
        raise files.OutputError(
            f"--out {out}: {existing[0].name} already exists; pass --force to overwrite "
            f"({len(existing)} file{'s' if len(existing) > 1 else ''} would be replaced)"
            + ("" if resume else "; or --resume to continue an interrupted run")
        )
    o.replaceable |= set(existing)
    for path in [o.checkpoint(o.start + 1), o.plot, o.history, o.state]:  # type, writability (existence: above)
        files.check_output(path, True, "--out")
    per_epoch = sum(int(np.prod(shape)) * 4 for shape in canonical_shapes(_plan(s)).values()) + (1 << 16)
    files.check_space(out / o.stem, (s.epochs - o.start) * per_epoch + 2 * per_epoch, "--out")
    return o


# Set before the framework is imported (``reproducible``): TensorFlow's oneDNN kernels
# pick their summation order at run time, so two runs of the same steps differ.
REPRODUCIBLE_ENVIRONMENT = {"keras": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def reproducible(framework: str) -> None:
    """Make ``framework``'s training repeat bit for bit, as far as it is decided before
    its import (the rest is ``Trainer(deterministic=True)``). A value the user set wins."""
    import os

    for name, value in REPRODUCIBLE_ENVIRONMENT.get(framework, {}).items():
        os.environ.setdefault(name, value)


def _plan(s: Settings) -> spec.Plan:
    v = spec.VARIANTS[s.variant]
    aux = v.aux is not None and spec.aux_admits(spec.resolve(v, aux_logits=True), v.input.size)
    return spec.resolve(v, s.num_classes, aux_logits=aux)


def _run_of(path: Path) -> str | None:
    """The run a checkpoint belongs to (its metadata), None if it cannot tell."""
    try:
        return safetensors(path).metadata.get("run")
    except (OSError, ValueError):
        return None


def _comparable(s: Settings) -> dict[str, object]:
    return {k: v for k, v in asdict(s).items() if k != "epochs"}


_OPTION = {"batch_size": "--batch", "num_classes": "--num-classes", "aux_weight": "aux_weight"}


@dataclass(frozen=True)
class _State:
    """A state file's metadata, each field checked as its tensors are (their SHA-256):
    the file is the user's to edit, so every value is refused in one line, not used."""

    run: str
    epoch: int
    settings: dict[str, Any]
    data: str
    rng: dict[str, Any]
    history: list[Epoch]
    checkpoint: str


_HEX = re.compile(r"[0-9a-f]+")
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _is(value: object, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _json_field(meta: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise ValueError(f"no {key!r}") from None
    except (ValueError, RecursionError):
        raise ValueError(f"{key!r} is not JSON") from None
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        raise ValueError(f"{key!r} is {names.get(type(value), 'a number')} in JSON, expected {names[kind]}")
    return value


def _check_settings(saved: dict[str, Any]) -> None:
    if set(saved) != set(_FIELD_TYPES):
        raise ValueError(f"'settings' holds {sorted(saved)}, expected {sorted(_FIELD_TYPES)}")
    numbers = {"lr", "momentum", "aux_weight"}
    for key, value in saved.items():
        optional = key in {"limit", "num_classes"} and value is None
        kind: tuple[type, ...] = (int, float) if key in numbers else (str,) if key == "variant" else (int,)
        if not optional and not _is(value, kind):
            raise ValueError(
                f"'settings' {key} is {value!r}, expected {'a number' if key in numbers else kind[0].__name__}"
            )


def _check_history(history: list[Any], epoch: int) -> list[Epoch]:
    if len(history) != epoch:
        raise ValueError(f"'history' holds {len(history)} epochs, the state says {epoch}")
    fields = {f.name for f in dataclasses.fields(Epoch)}
    epochs = []
    for i, e in enumerate(history, 1):
        # a run saved before the test loss was recorded resumes without it
        if not isinstance(e, dict) or set(e) not in (fields, fields - {"test_loss"}):
            raise ValueError(f"'history' entry {i} is not an epoch (expected the keys {sorted(fields)})")
        measured = ("loss", "train_acc", "test_acc", "images_per_s", *(("test_loss",) if "test_loss" in e else ()))
        numbers = all(_is(e[k], (int, float)) for k in measured)
        if e["epoch"] != i or not numbers or not isinstance(e["checkpoint"], str):
            raise ValueError(f"'history' entry {i} is not epoch {i} with numbers and a checkpoint name")
        epochs.append(Epoch(**e))
    return epochs


def _check_rng(state: dict[str, Any]) -> None:
    """The data order's generator state: one numpy accepts for its PCG64 (what
    ``default_rng`` makes), with a 128-bit state."""
    inner = state.get("state")
    ok = (
        state.get("bit_generator") == "PCG64"
        and isinstance(inner, dict)
        and all(_is(inner.get(k), (int,)) and 0 <= inner[k] < 1 << 128 for k in ("state", "inc"))
        and _is(state.get("has_uint32"), (int,))
        and _is(state.get("uinteger"), (int,))
    )
    if not ok:
        raise ValueError("'rng' is not a PCG64 generator state")
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"'rng' is not a PCG64 generator state ({e})") from None


def read_state(path: Path) -> _State:
    """The metadata of a state file, every field checked; OutputError naming the file
    and the field otherwise."""
    try:
        meta = safetensors(path).metadata
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"'format' is {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        words = {k: meta.get(k) for k in ("run", "epoch", "data", "checkpoint")}
        for key, value in words.items():
            if not isinstance(value, str) or not (value.isdigit() if key == "epoch" else _HEX.fullmatch(value)):
                raise ValueError(f"{key!r} is {value!r}, expected {'a number' if key == 'epoch' else 'hex digits'}")
        epoch = int(meta["epoch"])
        if not 1 <= epoch <= MAX_EPOCHS:
            raise ValueError(f"'epoch' is {epoch}, expected 1 to {MAX_EPOCHS:,}")
        settings = _json_field(meta, "settings", dict)
        _check_settings(settings)
        rng = _json_field(meta, "rng", dict)
        _check_rng(rng)
        history = _check_history(_json_field(meta, "history", list), epoch)
    except OSError as e:
        raise files.OutputError(f"--resume: {path}: {files.describe_os_error(e)}") from None
    except ValueError as e:  # Damaged included
        raise files.OutputError(f"--resume: {path} is not a training state of this suite: {e}") from None
    return _State(meta["run"], epoch, settings, meta["data"], rng, history, meta["checkpoint"])


def _resumable(o: Outputs, s: Settings) -> tuple[str, int]:
    """(run id, complete epochs) of the run to resume, its options checked against ``s``."""
    if not o.state.exists():
        raise files.OutputError(
            f"--resume: no run of {o.stem} to continue in --out {o.out} ({o.state.name} is missing); "
            f"start one without --resume"
        )
    state = read_state(o.state)
    saved, epoch, run = state.settings, state.epoch, state.run
    ours = _comparable(s)
    for key, value in saved.items():
        if key != "epochs" and ours.get(key) != value:
            option = _OPTION.get(key, f"--{key.replace('_', '-')}")
            raise files.OutputError(
                f"--resume: the run in {o.out} was started with {option} {value}, not {ours.get(key)}; "
                f"pass the same options to continue it"
            )
    if epoch >= s.epochs:
        raise files.OutputError(f"--resume: the run in {o.out} has done {epoch} epochs; pass --epochs above {epoch}")
    return run, epoch


_RESTARTED: set[Path] = set()  # --out directories whose restart was announced (once per process)


def _restartable(o: Outputs, s: Settings, checkpoints: dict[int, Path]) -> set[Path]:
    """--resume where no state was ever written: a run that ended (killed) before its
    first epoch's state was complete leaves at most epoch 1's checkpoint and the history.
    Nothing can be continued, so it starts again from epoch 1 over those files, as the
    straight run would have; the history's options must be the same. Returns them."""
    leftovers = {p for p in (checkpoints.get(1), o.history, o.plot) if p is not None and p.exists()}
    if not leftovers or set(checkpoints) - {1}:
        raise files.OutputError(
            f"--resume: no run of {o.stem} to continue in --out {o.out} ({o.state.name} is missing); "
            f"start one without --resume"
        )
    if o.history.exists():
        try:
            doc: Any = json_document(o.history)
            saved = doc["settings"]
            same = isinstance(saved, dict) and {k: v for k, v in saved.items() if k != "epochs"} == _comparable(s)
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise files.OutputError(
                f"--resume: {o.history.name} in {o.out} is of a run with other options (or unreadable), and "
                f"{o.state.name} is missing; pass the same options, or --force without --resume to start anew"
            )
    if o.out.resolve() in _RESTARTED:  # check_outputs runs again when training starts
        return leftovers
    _RESTARTED.add(o.out.resolve())
    print(
        f"note: --resume: no epoch of the run in {o.out} was complete ({o.state.name} was never written); "
        f"starting again from epoch 1 over {', '.join(sorted(p.name for p in leftovers))}",
        file=sys.stderr,
        flush=True,
    )
    return leftovers


def saved(out: Path, s: Settings, framework: str) -> str:
    """What a run in ``out`` has on disk, as an interrupted run says it (its state file's
    last complete epoch), for when the process that would have said it is gone."""
    o = Outputs(Path(out), f"{s.variant}-{framework}")
    try:
        epoch = int(safetensors(o.state).metadata["epoch"])
    except (OSError, ValueError, KeyError):
        epoch = 0
    return kept(epoch, s.epochs, o.out, "checkpoints, history")


def kept(epoch: int, epochs: int, out: Path, what: str) -> str:
    """What an interrupted run says it kept: its complete epochs, or nothing."""
    if not epoch:
        return "no epoch was complete; nothing was written"
    done, verb = ("epoch 1", "is") if epoch == 1 else (f"epochs 1-{epoch}", "are")
    return f"{done} of {epochs} {verb} saved in {out} ({what}); continue with --resume"


def load_data(data: str | Path | None, s: Settings) -> dict[str, Split]:
    """The splits (at most ``limit`` images each), checked to be trainable: images of at
    least one pixel, a training set and a test set that are not empty."""
    splits = load_idx(data, s.limit, _max_images(_plan(s))) if data is not None else synthetic(seed=s.seed)
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


def _max_images(p: spec.Plan) -> MaxItems:
    """How many images of a shape a data file may hold: their side is bounded by the
    size they are resized to, their prepared bytes by ``MAX_PREPARED``."""

    def most(item: tuple[int, ...]) -> int:
        per_image = p.in_channels * p.input_size**2 * limits.FLOAT32
        if item:  # an image's rows x cols (labels have no shape)
            limits.check_image_side(item[0], item[1], p.input_size)
            per_image += RAW_COPIES * limits.FLOAT32 * item[0] * item[1]
        return MAX_PREPARED // per_image

    return most


def check_work(s: Settings, splits: dict[str, Split] | None = None, workers: int = 1) -> None:
    """--batch against the machine (the training activations of one batch at the
    variant's size); with ``splits``, --workers too: each worker holds every prepared
    image and its shard of the batch."""
    p = _plan(s)
    limits.check_work(limits.Work(p, p.input_size, s.batch_size, True, size_option=None, batch_option="--batch"))
    if splits is not None and workers > 1:
        images = sum(len(split.images) for split in splits.values())
        shard = -(-s.batch_size // workers)
        prepared = images * p.in_channels * p.input_size**2 * limits.FLOAT32
        limits.check_workers(workers, per_worker=prepared + limits.Work(p, p.input_size, shard, training=True).bytes)


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


@dataclass
class _Run:
    """What the loop writes after each epoch, and what it resumes from."""

    o: Outputs
    s: Settings
    p: spec.Plan
    framework: str
    data: str
    run: str = field(default_factory=lambda: secrets.token_hex(8))
    written: set[Path] = field(default_factory=set)  # files this process wrote (may rewrite)
    writer: bool = True  # of data-parallel workers, only worker 0 writes

    def may_replace(self, path: Path, force: bool) -> bool:
        return force or path in self.o.replaceable or path in self.written

    def write(self, path: Path, data: bytes, force: bool) -> Path:
        if not self.writer:
            return path
        atomic_write(path, data, overwrite=self.may_replace(path, force), option="--out")
        self.written.add(path)
        return path

    def save_epoch(self, backend: Backend, model, trainer, rng, history: list[Epoch], force: bool) -> Path:
        """The epoch's checkpoint, then the history, then the state that points at both."""
        epoch = history[-1].epoch
        path = self.o.checkpoint(epoch)
        if not self.writer:
            return path
        params = backend.to_canonical(model)
        save(params, path, self.p, self.may_replace(path, force), {"run": self.run, "epoch": str(epoch)})
        self.written.add(path)
        self.write(self.o.history, history_json(self.s, backend.version(), history), force)
        checkpoint = load_with_metadata(path, self.p)[1]["sha256"]  # read back: what a resume will find
        meta = {
            "format": STATE_FORMAT,
            "run": self.run,
            "epoch": str(epoch),
            "settings": json.dumps(asdict(self.s)),
            "data": self.data,
            "rng": json.dumps(rng.bit_generator.state),
            "history": json.dumps([asdict(e) for e in history]),
            "checkpoint": checkpoint,
            "framework": backend.version(),
        }
        state = {f"momentum.{k}": v for k, v in trainer.state().items()}
        save(state, self.o.state, None, self.may_replace(self.o.state, force), meta)
        self.written.add(self.o.state)
        return path

    def resume(self, backend: Backend, model, trainer, rng) -> list[Epoch]:
        """Weights, momentum, data order and history of the last complete epoch."""
        meta = read_state(self.o.state)
        try:
            state = load_with_metadata(self.o.state)[0]
            params, checkpoint = load_with_metadata(self.o.checkpoint(meta.epoch), self.p)
        except (CanonicalError, OSError, KeyError, ValueError) as e:
            raise files.OutputError(f"--resume: cannot continue the run in {self.o.out}: {e}") from None
        if checkpoint.get("sha256") != meta.checkpoint:
            raise files.OutputError(
                f"--resume: {self.o.checkpoint(meta.epoch).name} is not the checkpoint the state of {self.o.out} "
                f"recorded (it was replaced); cannot continue"
            )
        if meta.data != self.data:
            raise files.OutputError(f"--resume: the data differs from the run's in {self.o.out}; pass the same --data")
        self.run = meta.run
        backend.from_canonical(model, params)
        trainer.load_state({k.removeprefix("momentum."): v for k, v in state.items()})
        rng.bit_generator.state = meta.rng
        return meta.history


def history_json(s: Settings, version: str, history: list[Epoch]) -> bytes:
    doc = {"settings": asdict(s), "framework": version, "epochs": [asdict(e) for e in history]}
    return json.dumps(doc, indent=1).encode()


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
    the same global batches, and only worker 0 evaluates, logs and writes."""
    o = check_outputs(out, s, backend.name, force, resume)
    v = spec.VARIANTS[s.variant]
    classes = s.num_classes or v.head.classes
    _check_labels(splits, classes)
    aux = _plan(s).options.aux_logits
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
    run = _Run(o, s, p, backend.name, fingerprint(splits), writer=writer)
    if not writer:
        log, stream = (lambda line: None), io.StringIO()
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
            e = _epoch(backend, model, trainer, rng, epoch, s, (train_x, train_y), stream)
            test_acc, test_loss = evaluate(backend, model, test_x, test_y, s.batch_size) if writer else (0.0, math.nan)
            e = dataclasses.replace(e, test_acc=test_acc, test_loss=test_loss, checkpoint=str(o.checkpoint(epoch)))
            # a signal waits until both are done: the files on disk and the epochs an
            # interrupt reports as saved can never disagree
            with interrupts.signals_held(), _saying_what_is_kept(run, s, backend, history, force):
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


def _epoch(backend, model, trainer, rng, epoch: int, s: Settings, data, stream: TextIO) -> Epoch:
    """One pass over the training set in a new random order; its test accuracy is filled
    in afterwards."""
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
        progress(i, len(batches), float(np.mean(losses)), stream)
    seconds = time.perf_counter() - start
    if stream.isatty():
        stream.write("\n")
    return Epoch(epoch, float(np.mean(losses)), correct / len(train_x), 0.0, len(train_x) / seconds, "")


@contextlib.contextmanager
def _saying_what_is_kept(run: _Run, s: Settings, backend: Backend, history: list[Epoch], force: bool) -> Iterator[None]:
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


def _keep_on_interrupt(run: _Run, s: Settings, backend: Backend, history: list[Epoch], force: bool, e) -> None:
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


def loss_axis(history: list[Epoch], classes: int) -> tuple[float, float]:
    """(the loss of a uniform guess, the top of the loss axis): the axis runs from 0 past
    both that and every loss, so noise around chance is drawn as the flat line it is."""
    chance = math.log(classes)
    losses = [v for e in history for v in (e.loss, e.test_loss) if math.isfinite(v)]
    return chance, max([chance, *losses]) * 1.15


def plot(history: list[Epoch], title: str, s: Settings) -> bytes:
    """Two panels, as d2l's animator draws the curves: the training and test loss, and the
    train and test accuracy, per epoch (markers, so a single epoch shows too). The loss
    axis starts at 0 and reaches past the loss of a guess (ln of the classes), drawn as a
    line, so a run that never leaves chance looks flat instead of magnifying noise; the
    title carries the learning rate."""
    import matplotlib

    matplotlib.use("Agg")  # no display; and set before pyplot is imported
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history]
    chance, top = loss_axis(history, _plan(s).num_classes)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    train_label = "train loss" + (f" (with aux x {s.aux_weight})" if s.aux_weight and _plan(s).aux else "")
    loss_ax.plot(epochs, [e.loss for e in history], "o-", label=train_label)
    if any(math.isfinite(e.test_loss) for e in history):
        loss_ax.plot(epochs, [e.test_loss for e in history], "^-.", label="test loss")
    loss_ax.axhline(chance, color="#888888", linestyle=":", linewidth=1, label=f"chance (ln {_plan(s).num_classes})")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.set_ylim(0, top)
    acc_ax.plot(epochs, [e.train_acc for e in history], "s--", label="train acc")
    acc_ax.plot(epochs, [e.test_acc for e in history], "^-.", label="test acc")
    acc_ax.axhline(1 / _plan(s).num_classes, color="#888888", linestyle=":", linewidth=1, label="chance")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.set_xticks(epochs if len(epochs) <= 12 else ax.get_xticks())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}; SGD lr {s.lr:g}, momentum {s.momentum:g}, batch {s.batch_size}", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
