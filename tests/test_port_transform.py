"""``port`` and ``transform_input`` (issue #25): the setting is said on reading and in
the load line, carried into every format that can record it (and checked there before
DST appears), and a format that cannot record it says so. The load lines ``port``
prints run clean in a fresh process (issue #25, item 6)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import deploy, registry
from conformance.formats.port import VerificationError, init, port, read_checkpoint

from .conftest import ROOT, backend_or_skip, save_torch, torch_state

VARIANT = "googlenet_bn"  # torchvision's: its pretrained weights expect the transform
CLASSES = 10  # a smaller classifier: what is tested does not depend on it

# DST name, format, the frameworks (or packages) it needs.
WRITTEN = {
    "safetensors": ("w.safetensors", None, ("torch",)),
    "npz": ("w.npz", None, ("torch",)),
    "torch": ("w.pth", None, ("torch",)),
    "keras-weights": ("w.weights.h5", None, ("keras",)),
    "keras": ("w.keras", None, ("keras",)),
    "mxnet": ("w.params", None, ("mxnet",)),
    "onnx": ("w.onnx", None, ("torch", "onnxruntime", "onnxscript")),
    "torchscript": ("w.pt", "torchscript", ("torch",)),
    "exported": ("w.pt2", None, ("torch",)),
    "savedmodel": ("w_savedmodel", "savedmodel", ("keras",)),
    "gluon-export": ("w-symbol.json", None, ("mxnet",)),
    "flax-msgpack": ("w.msgpack", None, ("jax",)),
    "orbax": ("w_orbax", "orbax", ("jax",)),
}
RECORDING = [name for name, fmt in registry.FORMATS.items() if fmt.keeps_transform and fmt.readable]
NOT_RECORDING = [name for name in WRITTEN if not registry.FORMATS[name].keeps_transform]


def _needs(names: tuple[str, ...]) -> None:
    for name in names:
        if name in ("torch", "keras", "mxnet"):
            backend_or_skip(name)
        else:
            pytest.importorskip(name)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Each writable format, written once by ``init`` with the transform on: its path
    and ``port``'s log. A format whose framework is missing is left out."""
    folder = tmp_path_factory.mktemp("transform")
    out = {}
    for name, (file, fmt, needs) in WRITTEN.items():
        try:
            _needs(needs)
        except pytest.skip.Exception:
            continue
        log: list[str] = []
        init(folder / file, VARIANT, fmt, CLASSES, transform_input=True, log=log.append)
        out[name] = (folder / file, log)
    return out


def transform_of(path: Path) -> bool:
    """The transform_input the file records, as ``port`` reads it (off where none)."""
    return read_checkpoint(path, VARIANT, num_classes=CLASSES).plan.options.transform_input


def _get(written, name: str) -> tuple[Path, list[str]]:
    if name not in written:
        pytest.skip(f"{name}: its framework is not installed")
    return written[name]


def _load_line(log: list[str]) -> str:
    (line,) = [line for line in log if line.startswith("load   ")]
    return line.removeprefix("load   ")


@pytest.mark.parametrize("name", RECORDING)
def test_a_format_that_records_transform_input_keeps_it(written, name):
    path, log = _get(written, name)
    assert transform_of(path) is True
    assert f"transform_input=True is in {registry.FORMATS[name].keeps_transform}" in _load_line(log)
    assert not any("cannot record transform_input" in line for line in log)


@pytest.mark.parametrize("name", NOT_RECORDING)
def test_a_format_that_cannot_record_it_says_so_and_its_load_line_builds_with_it(written, name):
    path, log = _get(written, name)
    assert any(line.startswith(f"note   {name}: ") and "cannot record transform_input" in line for line in log)
    assert "transform_input=True" in _load_line(log)
    assert transform_of(path) is False  # nothing recorded: off


def test_graphs_carry_the_transform(written):
    """The write-only graphs record it in what they compute: the verification compared
    their outputs with a model that has the transform; here, one without it differs."""
    path, _ = _get(written, "torchscript")
    t = backend_or_skip("torch")
    from conformance.formats import deploy

    p = spec.resolve(VARIANT, CLASSES, True, True)
    params = canonical.random_params(p, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    outputs, _ = deploy.run_fresh("torchscript", path, x, aux=False)
    on, off = t.build(VARIANT, CLASSES, True, transform_input=True), t.build(VARIANT, CLASSES, True)
    for model in (on, off):
        t.from_canonical(model, params)
    assert abs(outputs["logits"] - t.forward(on, x)).max() < 1e-4
    assert abs(outputs["logits"] - t.forward(off, x)).max() > 1e-2


def test_a_state_dict_source_says_it_records_nothing_and_the_flag_turns_it_on(tmp_path):
    src = save_torch(torch_state(VARIANT, num_classes=CLASSES), tmp_path / "tv.pth")
    log: list[str] = []
    port(src, tmp_path / "off.safetensors", VARIANT, num_classes=CLASSES, log=log.append)
    assert "transform_input off (not recorded in the file)" in log[0]
    assert any(line.startswith("note   torch: PyTorch state_dict files do not record transform_input") for line in log)
    assert "torchvision's pretrained googlenet was trained with it" in "".join(log)
    assert transform_of(tmp_path / "off.safetensors") is False
    log = []
    port(src, tmp_path / "on.safetensors", VARIANT, num_classes=CLASSES, transform_input=True, log=log.append)
    assert "transform_input on (--transform-input)" in log[0]
    assert not any("do not record" in line for line in log)
    assert transform_of(tmp_path / "on.safetensors") is True


def test_a_recorded_transform_survives_a_port_without_the_flag(written, tmp_path):
    path, _ = _get(written, "safetensors")
    log: list[str] = []
    port(path, tmp_path / "again.npz", VARIANT, num_classes=CLASSES, log=log.append)
    assert "transform_input on (recorded in the file)" in log[0]
    assert transform_of(tmp_path / "again.npz") is True


@pytest.mark.parametrize("name", ["safetensors", "npz"])
def test_negative_control_a_writer_that_drops_it_is_refused(written, tmp_path, monkeypatch, name):
    """A port whose writer records transform_input off (as port did before) passes the
    outputs' verification, which builds from the plan; the record check refuses it."""
    path, _ = _get(written, "safetensors")
    fmt = registry.FORMATS[name]
    dropping = fmt.write

    def write(params, p):
        return dropping(params, spec.with_options(p, transform_input=False))

    monkeypatch.setitem(registry.FORMATS, name, dataclasses.replace(fmt, write=write))
    dst = tmp_path / f"dropped.{name}"
    with pytest.raises(VerificationError, match="records transform_input False, not True"):
        port(path, dst, VARIANT, num_classes=CLASSES, dst_format=name)
    assert not dst.exists()


def run_clean(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """``line`` as a reader's process runs it: a fresh interpreter, the suite importable,
    none of the environment the suite's own processes set."""
    quiet = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "PYTHONWARNINGS", "KERAS_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("name", list(WRITTEN))
def test_the_printed_load_line_runs_clean(written, name):
    path, log = _get(written, name)
    done = run_clean(_load_line(log), path.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""


@pytest.mark.parametrize("name", ["gluon-export", "keras"])
def test_negative_control_the_noisy_loads_fail_the_clean_run_check(written, name):
    """What the issue saw: ``SymbolBlock.imports`` with the params file ("Cannot decide
    type"), ``import keras`` before ``impl_keras`` (TensorFlow's start-up lines)."""
    path, _ = _get(written, name)
    if name == "gluon-export":
        params = deploy.params_of(path)
        mxnet = "import numpy; numpy.bool = bool; import mxnet"
        line = f"{mxnet}; mxnet.gluon.SymbolBlock.imports({str(path)!r}, ['data'], {str(params)!r})"
    else:
        line = f"import keras, impl_keras; keras.saving.load_model({str(path)!r})"
    done = run_clean(line, path.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr != ""
