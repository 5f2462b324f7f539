"""One framework trained twice on the same tiny data: straight through, and interrupted
mid-epoch (as SIGINT would) then resumed with ``resume=True``. Run in-process by
tests/test_resume.py (``inception_mnist``), or as ``python -m tests.resume_run FRAMEWORK
[VARIANT]`` in a fresh process, where the framework is imported with its reproducible
settings (Keras: oneDNN off); ``googlenet_cifar`` (dropout 0.4, BatchNorm) takes
minutes on two cores, so it is run by hand (figures in `docs/training.md`)."""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from conformance import canonical, frameworks
from conformance.train import data, loop
from conformance.train.settings import Settings


def settings(variant: str) -> Settings:
    return Settings(variant, epochs=3, batch_size=8, momentum=0.9, seed=7)


class InterruptAt(io.StringIO):
    """A progress stream that raises KeyboardInterrupt at the given epoch and batch."""

    def __init__(self, epoch: int, batch: int, batches: int) -> None:
        super().__init__()
        self.at, self.seen = (epoch - 1) * batches + batch, 0

    def write(self, text: str) -> int:
        self.seen += text.count("\n")
        if self.seen >= self.at:
            raise KeyboardInterrupt
        return super().write(text)


def compare(framework: str, variant: str = "inception_mnist") -> dict[str, object]:
    """Bit-identity of every epoch's checkpoint and of the final momentum."""
    backend = frameworks.load([framework])[0][framework]
    s = settings(variant)
    splits = data.synthetic(n_train=32, n_test=8, seed=3)
    quiet = {"log": lambda line: None, "stream": io.StringIO()}
    with tempfile.TemporaryDirectory() as straight, tempfile.TemporaryDirectory() as broken:
        a, b = Path(straight), Path(broken)
        loop.train(backend, s, splits, a, **quiet)  # type: ignore[arg-type]
        try:  # 4 batches an epoch; progress writes a line at each quarter in a log
            loop.train(backend, s, splits, b, log=lambda line: None, stream=InterruptAt(2, 2, 4))
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        kept = sorted(p.name for p in b.iterdir())
        loop.train(backend, s, splits, b, resume=True, **quiet)  # type: ignore[arg-type]
        stem = f"{variant}-{framework}"
        epochs = {}
        for e in range(1, s.epochs + 1):
            x, y = (
                canonical.load(a / f"{stem}-epoch{e}.safetensors"),
                canonical.load(b / f"{stem}-epoch{e}.safetensors"),
            )
            epochs[e] = [k for k in x if not np.array_equal(x[k], y[k])]
        x, y = canonical.load(a / f"{stem}.state.safetensors"), canonical.load(b / f"{stem}.state.safetensors")
        losses = [[e["loss"] for e in json.loads((d / f"{stem}.json").read_text())["epochs"]] for d in (a, b)]
    return {
        "interrupted": interrupted,
        "kept": kept,
        "changed": epochs,
        "momentum": len(x),
        "momentum_changed": [k for k in x if not np.array_equal(x[k], y[k])],
        "losses": losses,
    }


if __name__ == "__main__":
    loop.reproducible(sys.argv[1])
    print(json.dumps(compare(*sys.argv[1:3])))
