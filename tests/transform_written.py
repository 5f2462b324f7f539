"""What tests/test_port_transform.py (PyTorch's formats) and
tests/test_port_transform_keras_mxnet_jax.py share: googlenet_bn written by ``init`` with
transform_input on, one format at a time when a test first asks for it (a file per format
family: with ``--dist loadfile`` each runs in a worker of its own), and the checks each
family's tests make of a written file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.formats import registry
from conformance.formats.port import init, read_checkpoint

from .conftest import ROOT, backend_or_skip

VARIANT = "googlenet_bn"  # torchvision's: its pretrained weights expect the transform
CLASSES = 10  # a smaller classifier: what is tested does not depend on it

# DST name, format, the frameworks (or packages) it needs.
TORCH = {
    "safetensors": ("w.safetensors", None, ("torch",)),
    "npz": ("w.npz", None, ("torch",)),
    "torch": ("w.pth", None, ("torch",)),
    "onnx": ("w.onnx", None, ("torch", "onnxruntime", "onnxscript")),
    "torchscript": ("w.pt", "torchscript", ("torch",)),
    "exported": ("w.pt2", None, ("torch",)),
}
KERAS_MXNET_JAX = {
    "keras-weights": ("w.weights.h5", None, ("keras",)),
    "keras": ("w.keras", None, ("keras",)),
    "mxnet": ("w.params", None, ("mxnet",)),
    "savedmodel": ("w_savedmodel", "savedmodel", ("keras",)),
    "gluon-export": ("w-symbol.json", None, ("mxnet",)),
    "flax-msgpack": ("w.msgpack", None, ("jax",)),
    "orbax": ("w_orbax", "orbax", ("jax",)),
}
WRITTEN = {**TORCH, **KERAS_MXNET_JAX}


def recording(family: dict) -> list[str]:
    """The formats of ``family`` that record transform_input and are read back."""
    return [name for name in family if registry.FORMATS[name].keeps_transform and registry.FORMATS[name].readable]


def not_recording(family: dict) -> list[str]:
    return [name for name in family if not registry.FORMATS[name].keeps_transform]


def _needs(names: tuple[str, ...]) -> None:
    for name in names:
        if name in ("torch", "keras", "mxnet"):
            backend_or_skip(name)
        else:
            pytest.importorskip(name)


class Written:
    """Each format written by ``init`` with the transform on, when a test first asks for
    it: its path and ``port``'s log. A format whose framework is missing skips the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[str, tuple[Path, list[str]]] = {}

    def __call__(self, name: str) -> tuple[Path, list[str]]:
        if name not in self.done:
            file, fmt, needs = WRITTEN[name]
            _needs(needs)
            log: list[str] = []
            init(self.folder / file, VARIANT, fmt, CLASSES, transform_input=True, log=log.append)
            self.done[name] = (self.folder / file, log)
        return self.done[name]


def transform_of(path: Path) -> bool:
    """The transform_input the file records, as ``port`` reads it (off where none)."""
    return read_checkpoint(path, VARIANT, num_classes=CLASSES).plan.options.transform_input


def load_line(log: list[str]) -> str:
    (line,) = [line for line in log if line.startswith("load   ")]
    return line.removeprefix("load   ")


def check_kept(written: Written, name: str) -> None:
    """A format that records transform_input keeps it, and its load line says where."""
    path, log = written(name)
    assert transform_of(path) is True
    assert f"transform_input=True is in {registry.FORMATS[name].keeps_transform}" in load_line(log)
    assert not any("cannot record transform_input" in line for line in log)


def check_said(written: Written, name: str) -> None:
    """A format that cannot record it says so, and its load line builds with it."""
    path, log = written(name)
    assert any(line.startswith(f"note   {name}: ") and "cannot record transform_input" in line for line in log)
    assert "transform_input=True" in load_line(log)
    assert transform_of(path) is False  # nothing recorded: off


def run_clean(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """``line`` as a reader's process runs it: a fresh interpreter, the suite importable,
    none of the environment the suite's own processes set."""
    quiet = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "PYTHONWARNINGS", "KERAS_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def check_load_line(written: Written, name: str) -> None:
    """The load line ``port`` printed runs clean in a fresh process (stderr empty)."""
    path, log = written(name)
    done = run_clean(load_line(log), path.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
