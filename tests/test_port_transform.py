"""``port`` and ``transform_input`` (issue #25), PyTorch's formats: the setting is said on
reading and in the load line, carried into every format that can record it (and checked
there before DST appears), and a format that cannot record it says so. The load lines
``port`` prints run clean in a fresh process (issue #25, item 6). Keras's, MXNet's and
JAX's formats: tests/test_port_transform_keras_mxnet_jax.py."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import registry
from conformance.formats.port import VerificationError, port

from .conftest import backend_or_skip, save_torch, torch_state
from .transform_written import (
    CLASSES,
    TORCH,
    VARIANT,
    Written,
    check_kept,
    check_load_line,
    check_said,
    not_recording,
    recording,
    transform_of,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    return Written(tmp_path_factory.mktemp("transform"))


@pytest.mark.parametrize("name", recording(TORCH))
def test_a_format_that_records_transform_input_keeps_it(written, name):
    check_kept(written, name)


@pytest.mark.parametrize("name", not_recording(TORCH))
def test_a_format_that_cannot_record_it_says_so_and_its_load_line_builds_with_it(written, name):
    check_said(written, name)


@pytest.mark.parametrize("name", list(TORCH))
def test_the_printed_load_line_runs_clean(written, name):
    check_load_line(written, name)


def test_graphs_carry_the_transform(written):
    """The write-only graphs record it in what they compute: the verification compared
    their outputs (in a fresh process) with a model that has the transform; here, loaded
    in this one, they differ from one without it."""
    path, _ = written("torchscript")
    t = backend_or_skip("torch")
    import torch

    p = spec.resolve(VARIANT, CLASSES, True, True)
    params = canonical.random_params(p, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    graph = torch.jit.load(io.BytesIO(path.read_bytes()), map_location="cpu").eval()
    with torch.no_grad():
        logits = graph(torch.from_numpy(x)).numpy()
    on, off = t.build(VARIANT, CLASSES, True, transform_input=True), t.build(VARIANT, CLASSES, True)
    for model in (on, off):
        t.from_canonical(model, params)
    assert abs(logits - t.forward(on, x)).max() < 1e-4
    assert abs(logits - t.forward(off, x)).max() > 1e-2


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
    path, _ = written("safetensors")
    log: list[str] = []
    port(path, tmp_path / "again.npz", VARIANT, num_classes=CLASSES, log=log.append)
    assert "transform_input on (recorded in the file)" in log[0]
    assert transform_of(tmp_path / "again.npz") is True


@pytest.mark.parametrize("name", ["safetensors", "npz"])
def test_negative_control_a_writer_that_drops_it_is_refused(written, tmp_path, monkeypatch, name):
    """A port whose writer records transform_input off (as port did before) passes the
    outputs' verification, which builds from the plan; the record check refuses it."""
    path, _ = written("safetensors")
    fmt = registry.FORMATS[name]
    dropping = fmt.write

    def write(params, p):
        return dropping(params, spec.with_options(p, transform_input=False))

    monkeypatch.setitem(registry.FORMATS, name, dataclasses.replace(fmt, write=write))
    dst = tmp_path / f"dropped.{name}"
    with pytest.raises(VerificationError, match="records transform_input False, not True"):
        port(path, dst, VARIANT, num_classes=CLASSES, dst_format=name)
    assert not dst.exists()
