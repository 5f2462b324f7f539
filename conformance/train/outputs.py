"""Where a run writes, checked before training: --out made or refused, files of an
earlier run not replaced without --force, enough free space, and with --resume the run
to continue and its options; and what an interrupted run says it kept."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import files
from ..canonical import canonical_shapes
from ..reading import json_document, safetensors
from .settings import Settings, plan_of
from .state import read_state


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
    per_epoch = sum(int(np.prod(shape)) * 4 for shape in canonical_shapes(plan_of(s)).values()) + (1 << 16)
    files.check_space(out / o.stem, (s.epochs - o.start) * per_epoch + 2 * per_epoch, "--out")
    return o


def _run_of(path: Path) -> str | None:
    """The run a checkpoint belongs to (its metadata), None if it cannot tell."""
    try:
        return safetensors(path).metadata.get("run")
    except (OSError, ValueError):
        return None


def _comparable(s: Settings) -> dict[str, object]:
    return {k: v for k, v in asdict(s).items() if k != "epochs"}


_OPTION = {"batch_size": "--batch", "num_classes": "--num-classes", "aux_weight": "aux_weight"}


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
