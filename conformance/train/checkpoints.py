"""What the loop writes after each epoch (checkpoint, history, state, in that order) and
what a resumed run reads back from them."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import files, spec
from ..canonical import CanonicalError, load_with_metadata, save
from ..files import atomic_write
from ..interface import Backend
from .outputs import Outputs
from .settings import Epoch, Settings
from .state import STATE_FORMAT, read_state


@dataclass
class Run:
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
