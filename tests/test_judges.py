"""ONNX Runtime as an independent judge: the exported graph agrees with the reference
stage by stage; a judge whose exporter cannot export a model says why instead of
failing; a missing extra is skipped with its install hint; and the negative control,
a wrong export, fails."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conformance import spec
from conformance.check import harness, judges
from conformance.check.compare import REL_TOL

from .conftest import backend_or_skip, patched


def judge_or_skip(name: str):
    backends, skipped = judges.load_with_judges([name])
    if name not in backends:
        pytest.skip(f"{name}: {skipped[name]}")
    return backends[name]


def test_onnx_runtime_agrees_stage_by_stage_with_the_adaptive_aux_pool():
    """googlenet_bn: torchvision's adaptive 4 x 4 aux pool at 97 (a 6 x 6 map), which
    the TorchScript exporter refuses; the dynamo exporter's graph returns every stage."""
    torch_, onnx = backend_or_skip("torch"), judge_or_skip("onnx")
    report = harness.run(["googlenet_bn"], {"torch": torch_, "onnx": onnx}, {}, sizes=[97], batch=1)
    assert report.passed and report.judges == ["onnx"] and report.reference == "torch"
    rows = report.variants[0].sizes[0].stages
    compared = {r.stage for r in rows if "onnx" in r.agreement}
    assert compared == set(spec.expected_shapes(spec.resolve("googlenet_bn", aux_logits=True), 97))
    assert all(r.agreement["onnx"].max_rel <= REL_TOL for r in rows)
    assert "onnx" not in report.variants[0].counts and "onnx" not in report.variants[0].roundtrip


def test_the_judge_forward_is_the_interface_forward():
    onnx = judge_or_skip("onnx")
    model = onnx.build("inception_mnist")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    torch_ = backend_or_skip("torch")
    np.testing.assert_allclose(onnx.forward(model, x), torch_.forward(model, x, mode="eager"), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"mode: expected one of 'onnxruntime', got 'eager'"):
        onnx.forward(model, x, mode="eager")


def test_an_exporter_that_cannot_is_reported_with_its_reason_not_failed():
    """MXNet's exporter has no ONNX form of the adaptive aux pool (measured: 4 x 4 output)."""
    torch_, onnx_mxnet = backend_or_skip("torch"), judge_or_skip("onnx-mxnet")
    report = harness.run(["googlenet_bn"], {"torch": torch_, "onnx-mxnet": onnx_mxnet}, {}, sizes=[97], batch=1)
    v = report.variants[0]
    assert report.passed and not v.errors
    assert "_contrib_AdaptiveAvgPooling2D operator with output_size != 1" in v.unsupported["onnx-mxnet at 97"]


def test_a_missing_onnx_extra_skips_the_judge_with_its_install_hint(monkeypatch):
    backend_or_skip("torch")
    real = judges.importlib.util.find_spec
    monkeypatch.setattr(judges.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    backends, skipped = judges.load_with_judges(["torch", "onnx"])
    assert list(backends) == ["torch"]
    assert "onnxruntime is missing" in skipped["onnx"] and "pip install -e '.[onnx]'" in skipped["onnx"]


def test_a_wrong_export_fails_at_the_stage_it_breaks():
    """The negative control: the graph handed to ONNX Runtime is exported from a copy
    whose inception block 1 has its 3x3 branch scaled by 1 %."""
    import torch

    torch_ = backend_or_skip("torch")
    judge_or_skip("onnx")  # the extra is installed

    def wrong_export(model, shape, with_aux, every_stage):
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.incep1.branch3x3_1.weight.mul_(1.01)
        return torch_.to_onnx(broken, shape, with_aux, every_stage)

    judge = judges.OnnxJudge("onnx", patched(torch_, to_onnx=wrong_export))
    report = harness.run(["inception_mnist"], {"torch": torch_, "onnx": judge}, {}, sizes=[28], batch=2)
    rows = {r.stage: r for r in report.variants[0].sizes[0].stages}
    assert not report.passed
    assert rows["conv1"].passed and not rows["incep1"].passed
    assert rows["incep1"].agreement["onnx"].max_rel > 10 * REL_TOL
