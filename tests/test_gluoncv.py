"""GluonCV's own googlenet: its parameter files port to PyTorch and Keras and reproduce
its outputs, and a port back into GluonCV's names loads into its model strictly.

GluonCV 0.10.5 installs with ``pip install --no-deps gluoncv``; its package
``__init__`` refuses torch 2, but ``model_zoo/googlenet.py`` needs only mxnet, so it
is loaded as a single file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import agreement
from conformance.formats import naming
from conformance.formats.port import port

from .conftest import backend_or_skip

VARIANT = "googlenet_gluoncv"


@pytest.fixture(scope="module")
def gluoncv_googlenet():
    backend_or_skip("mxnet")
    found = importlib.util.find_spec("gluoncv")
    if found is None:
        pytest.skip("GluonCV not installed: pip install --no-deps gluoncv==0.10.5.post0")
    path = Path(found.submodule_search_locations[0]) / "model_zoo" / "googlenet.py"
    module_spec = importlib.util.spec_from_file_location("gluoncv_googlenet", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gluoncv_file(gluoncv_googlenet, tmp_path_factory):
    """A parameter file written by GluonCV's own model, with seeded weights and BN
    statistics, and that model's outputs for a seeded input."""
    import mxnet as mx

    from impl_mxnet.engine import structural_params

    net = gluoncv_googlenet.googlenet(pretrained=False, aux_logits=True)
    net.initialize()
    p = spec.resolve(VARIANT, aux_logits=True)
    theirs = naming.from_canonical(canonical.random_params(p, 11), "gluoncv", p)
    for name, param in structural_params(net).items():
        param.set_data(mx.nd.array(theirs[name]))
    path = tmp_path_factory.mktemp("gluoncv") / "googlenet.params"
    net.save_parameters(str(path))
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits, aux2, aux1 = (o.asnumpy() for o in net(mx.nd.array(x)))
    return path, x, {"logits": logits, "aux2": aux2, "aux1": aux1}


def test_the_file_holds_gluoncv_names_and_the_head_twice(gluoncv_file):
    import mxnet as mx

    keys = set(mx.nd.load(str(gluoncv_file[0])))
    assert {
        "conv1.0.weight",
        "conv1.1.gamma",
        "inception3a.3.1.0.weight",
        "aux1.3.weight",
        "output.weight",
        "head.2.weight",
    } <= keys
    assert naming.detect(keys) == "gluoncv"


@pytest.mark.parametrize("target,suffix", [("torch", ".pth"), ("keras", ".weights.h5")])
def test_gluoncv_file_ports_and_reproduces_gluoncvs_outputs(gluoncv_file, tmp_path, target, suffix):
    b = backend_or_skip(target)
    path, x, expected = gluoncv_file
    result = port(path, tmp_path / f"ported{suffix}", VARIANT)
    assert result.passed and "names: gluoncv" in result.notes
    assert any("head.2.weight" in note for note in result.notes)  # the duplicate, checked and dropped
    model = b.build(VARIANT, aux_logits=True)
    if target == "torch":
        import torch

        model.load_state_dict(torch.load(tmp_path / "ported.pth", weights_only=True))
    else:
        model.load_weights(str(tmp_path / "ported.weights.h5"))
    logits, aux2, aux1 = b.forward(model, x, aux=True)
    for name, got in (("logits", logits), ("aux2", aux2), ("aux1", aux1)):
        a = agreement(expected[name], got, logits=True)
        assert a.passed, (target, name, a)


def test_round_trip_back_into_gluoncvs_own_model(gluoncv_googlenet, gluoncv_file, tmp_path):
    import mxnet as mx

    path, x, expected = gluoncv_file
    port(path, tmp_path / "via.safetensors", VARIANT)
    port(tmp_path / "via.safetensors", tmp_path / "back.params", VARIANT, dst_format="gluoncv")
    net = gluoncv_googlenet.googlenet(pretrained=False, aux_logits=True)
    net.load_parameters(str(tmp_path / "back.params"))  # strict: every parameter, nothing extra
    original, back = mx.nd.load(str(path)), mx.nd.load(str(tmp_path / "back.params"))
    assert set(original) == set(back)
    assert all(np.array_equal(original[k].asnumpy(), back[k].asnumpy()) for k in original)
    logits = net(mx.nd.array(x))[0].asnumpy()
    np.testing.assert_array_equal(logits, expected["logits"])


def test_gluoncv_is_not_torchvision_where_it_matters():
    """Same weights, different pooling: the variants must differ in the spec."""
    bn, gcv = (spec.resolve(v, aux_logits=True) for v in ("googlenet_bn", VARIANT))
    assert canonical.canonical_shapes(bn) == canonical.canonical_shapes(gcv)
    assert spec.stage_shapes(bn, 239)["maxpool4"] == (832, 8, 8)  # ceil
    assert spec.stage_shapes(gcv, 239)["maxpool4"] == (832, 7, 7)  # floor
