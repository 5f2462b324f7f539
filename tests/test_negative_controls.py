"""Negative controls: every parity check is shown to fail on a deliberately broken port.

Each test breaks one thing a real port gets wrong (`docs/differences.md`, "Where the four
frameworks differ"), runs
the same harness as ``python -m conformance check``, and asserts that the report
fails exactly where the bug is, while the rest still passes. The mistakes that
``python -m conformance pitfalls`` measures are defined once, in
``conformance.teach.pitfalls``, and used here as they are.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance import spec
from conformance.check import harness, inputs, results
from conformance.check.compare import REL_TOL
from conformance.teach.pitfalls import PITFALLS

from .conftest import backend_or_skip, eager_only, patched
from .helpers import PUBLISHED


def check(backends: dict, variant: str, size: int) -> results.VariantReport:
    """The check of ``backends`` (a broken port among them) in eager mode, where each
    framework's stages are compared with the reference's."""
    report = harness.run([variant], eager_only(backends), {}, sizes=[size], batch=2)
    assert not report.passed
    return report.variants[0]


def rows(v: results.VariantReport) -> dict[str, results.StageRow]:
    return {r.stage: r for r in v.sizes[0].stages}


def test_kernel_not_transposed_fails_at_the_first_conv():
    """OIHW -> HWIO done as transpose(3, 2, 1, 0): the kernel's height and width swap.
    Square kernels keep their shape, so only the values can tell."""
    torch_, keras_ = backend_or_skip("torch"), backend_or_skip("keras")
    with PITFALLS["kernel-transposed"].broken(keras_) as broken:
        v = check({"torch": torch_, "keras": broken}, "googlenet", 97)
    conv1 = rows(v)["conv1"]
    assert conv1.shapes == {"torch": conv1.expected, "keras": conv1.expected}
    assert not conv1.passed and conv1.agreement["keras"].max_rel > 100 * REL_TOL
    assert v.counts_passed  # counts cannot see it; only the values do


def test_asymmetric_same_padding_fails_while_shapes_match():
    """Keras ``padding="same"`` on the strided 7x7 conv pads (2, 3) at 224; PyTorch pads
    (3, 3). The output is 112 x 112 either way (and "same" 3x3/2 pools on even maps give
    the ceil-mode pools' windows)."""
    torch_, keras_ = backend_or_skip("torch"), backend_or_skip("keras")
    with PITFALLS["same-padding"].broken(keras_) as broken:
        v = check({"torch": torch_, "keras": broken}, "googlenet_bn", 224)
    r = rows(v)
    assert all(s == r[name].expected for name in r for s in r[name].shapes.values())  # shapes all agree
    assert not r["conv1"].passed and r["conv1"].agreement["keras"].max_rel > 100 * REL_TOL
    assert not r["logits"].passed


def test_wrong_batchnorm_epsilon_fails():
    """Gluon's default BatchNorm epsilon is 1e-5; torchvision's GoogLeNet uses 1e-3."""
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")
    with PITFALLS["bn-eps-gluon"].broken(mxnet_) as broken:
        v = check({"torch": torch_, "mxnet": broken}, "googlenet_bn", 97)
    assert not rows(v)["conv1"].passed
    assert rows(v)["conv1"].agreement["mxnet"].max_rel > 100 * REL_TOL


def test_aux_features_flattened_in_the_wrong_order_fail_only_the_aux_heads():
    """fc1 reads 128 x 4 x 4 features: (C, H, W) in PyTorch, (H, W, C) after a Keras
    Flatten. Porting fc1 without permuting its rows breaks the aux heads only."""
    torch_, keras_ = backend_or_skip("torch"), backend_or_skip("keras")
    with PITFALLS["dense-rows"].broken(keras_) as broken:
        v = check({"torch": torch_, "keras": broken}, "googlenet", 224)
    r = rows(v)
    assert not r["aux1"].passed and not r["aux2"].passed
    assert r["aux1"].agreement["keras"].max_rel > 100 * REL_TOL
    assert all(row.passed for name, row in r.items() if name not in ("aux1", "aux2"))


def test_liu_s_fc_flattened_in_the_wrong_order_fails_only_the_logits():
    """Liu's Inception net's fc reads the whole 88 x 4 x 4 map: in Keras its rows need the
    same (C, H, W) -> (H, W, C) permutation as aux fc1. Every stage before it passes."""
    torch_, keras_ = backend_or_skip("torch"), backend_or_skip("keras")
    with PITFALLS["dense-rows"].broken(keras_) as broken:
        r = rows(check({"torch": torch_, "keras": broken}, "inception_mnist", 28))
    assert not r["logits"].passed and r["logits"].agreement["keras"].max_rel > 100 * REL_TOL
    assert all(row.passed for name, row in r.items() if name != "logits")


def test_floor_instead_of_ceil_pooling_fails_on_shape():
    """Pools built without ceil rounding: 112 -> 55 instead of 56 after maxpool1."""
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")
    with PITFALLS["floor-pooling"].broken(mxnet_) as broken:
        v = check({"torch": torch_, "mxnet": broken}, "googlenet_bn", 224)
    maxpool1 = rows(v)["maxpool1"]
    assert maxpool1.shapes["mxnet"] == (2, 64, 55, 55) and maxpool1.expected == (2, 64, 56, 56)
    assert not maxpool1.passed


def test_a_port_that_cannot_run_is_reported_not_a_crash():
    """With floor pools the avg 5x5/3 aux pool gives 3 x 3, and fc1 refuses 1152 inputs."""
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")
    with PITFALLS["floor-pooling"].broken(mxnet_) as broken:
        v = check({"torch": torch_, "mxnet": broken}, "googlenet", 224)
    assert list(v.errors) == ["mxnet at 224"] and "MXNetError" in v.errors["mxnet at 224"]
    assert v.sizes[0].passed  # what torch computed still checks out against the spec


def test_lossy_round_trip_fails():
    """An adapter that passes weights through float16 still agrees to ~1e-3, and the
    bit-identical round trip catches it."""
    torch_ = backend_or_skip("torch")

    def lossy(model):
        return {k: v.astype(np.float16).astype(np.float32) for k, v in torch_.to_canonical(model).items()}

    v = check({"torch": patched(torch_, to_canonical=lossy)}, "googlenet", 97)
    assert v.roundtrip["torch"]  # names the keys that changed
    assert "conv1.conv.weight" in v.roundtrip["torch"]


def test_keras_count_params_total_fails_the_count():
    """``model.count_params()`` in Keras adds BatchNorm's moving statistics to the weights."""
    keras_ = backend_or_skip("keras")

    def keras_total(model):
        return model.count_params(), 0

    v = check({"keras": patched(keras_, count_params=keras_total)}, "googlenet_bn", 97)
    assert v.counts["keras"] == (sum(PUBLISHED["googlenet_bn", True]), 0) and not v.counts_passed


def test_a_framework_that_raises_is_a_failure_not_a_crash():
    torch_ = backend_or_skip("torch")

    def broken_build(variant, **options):
        raise RuntimeError("no such layer")

    v = check({"torch": torch_, "broken": patched(torch_, build=broken_build, name="broken")}, "googlenet", 97)
    assert v.errors == {"broken": "RuntimeError: no such layer"}
    assert v.sizes[0].passed  # torch alone still ran and passed


@pytest.mark.parametrize("scale", [1.0 + 2 * REL_TOL, 1.0 + 1e-2])
def test_a_small_scale_error_in_one_layer_fails(scale):
    """A port that is off by a factor in one layer (e.g. a mis-set BN scale)."""
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")

    def load_scaled(model, params):
        params = dict(params)
        params["inception4c.branch1.conv.bias"] = params["inception4c.branch1.conv.bias"] * np.float32(scale)
        params["inception4c.branch1.conv.weight"] = params["inception4c.branch1.conv.weight"] * np.float32(scale)
        mxnet_.from_canonical(model, params)

    v = check({"torch": torch_, "mxnet": patched(mxnet_, from_canonical=load_scaled)}, "googlenet", 97)
    r = rows(v)
    assert r["inception4b"].passed and not r["inception4c"].passed


def test_lrn_alpha_not_divided_by_size_fails_at_the_lrn():
    """TensorFlow's LRN takes alpha per element of the window sum; PyTorch, MXNet and the
    spec divide alpha by the window size. Porting alpha unchanged breaks lrn1 onwards."""
    torch_, keras_ = backend_or_skip("torch"), backend_or_skip("keras")
    with PITFALLS["lrn-alpha"].broken(keras_) as broken:
        v = check({"torch": torch_, "keras": broken}, "googlenet_lrn", 223)
    r = rows(v)
    assert r["maxpool1"].passed and not r["lrn1"].passed
    # Caffe's input transform gives pixels in 0-255, where LRN normalises hard: alpha x5 shows as ~0.6
    assert r["lrn1"].agreement["keras"].max_rel > 10 * REL_TOL


def test_symmetric_instead_of_same_padding_fails_at_conv1_while_shapes_match():
    """TF-slim's SAME pads the 7x7/2 conv (2, 3) at 224; a port padding (3, 3) keeps every
    shape. Keras's "same" is TensorFlow's own, so Keras is the reference's witness here."""
    keras_, torch_ = backend_or_skip("keras"), backend_or_skip("torch")
    with PITFALLS["symmetric-padding"].broken(torch_) as broken:
        v = check({"torch": broken, "keras": keras_}, "googlenet_slim", 224)
    r = rows(v)
    assert all(s == r[name].expected for name in r for s in r[name].shapes.values())
    assert not r["conv1"].passed and r["conv1"].agreement["keras"].max_rel > 100 * REL_TOL


def test_symmetric_padding_is_hidden_at_an_odd_size_where_same_is_symmetric():
    """At 209 every strided SAME op meets an odd map (209, 105, 53, 27, 14 -> the 2x2
    pool's (0, 0)): the spec says the mistake changes nothing, and the check agrees."""
    keras_, torch_ = backend_or_skip("keras"), backend_or_skip("torch")
    assert PITFALLS["symmetric-padding"].where(spec.resolve("googlenet_slim"), 209) is None
    with PITFALLS["symmetric-padding"].broken(torch_) as broken:
        report = harness.run(["googlenet_slim"], {"torch": broken, "keras": keras_}, {}, sizes=[209], batch=2)
    assert report.passed


def test_the_5x5_branch_that_is_3x3_fails_at_the_first_block():
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")
    with PITFALLS["slim-5x5"].broken(torch_) as broken:
        v = check({"torch": broken, "mxnet": mxnet_}, "googlenet_slim", 224)
    r = rows(v)
    assert r["maxpool2"].passed and not r["inception3a"].passed
    assert r["inception3a"].agreement["mxnet"].max_rel > 100 * REL_TOL


def test_a_batchnorm_gamma_that_is_not_there_fails_from_the_second_step():
    """Gluon's default scale=True gives TF-slim's BatchNorm a gamma of ones: the first step
    agrees, the second does not, and the count of trainable parameters shows it too."""
    torch_, mxnet_ = backend_or_skip("torch"), backend_or_skip("mxnet")
    with PITFALLS["slim-gamma"].broken(mxnet_) as broken:
        backends = eager_only({"torch": torch_, "mxnet": broken})
        report = harness.run(["googlenet_slim"], backends, {}, sizes=[193], batch=2, train=True)
    v = report.variants[0]
    training = {t.quantity: t for t in v.training}
    assert training["weights after step 1"].passed and not training["loss"].passed
    assert training["loss"].worst["mxnet"] == "step 2"
    assert v.counts["mxnet"][0] == 6_618_649 + 7_280 and not v.counts_passed


HAND_WRITTEN = [  # the mistakes of hand-written PyTorch ports: (pitfall, variant, size)
    ("relu-missing", "googlenet_d2l", 64),
    ("relu-added", "inception_mnist", 28),
    ("dropout-on", "googlenet_cifar", 32),
    ("branch-order", "googlenet_bn", 64),
    ("softmax-output", "googlenet_cifar", 32),
    ("count-include-pad", "inception_mnist", 28),
]


@pytest.mark.parametrize(("name", "variant", "size"), HAND_WRITTEN, ids=[h[0] for h in HAND_WRITTEN])
def test_a_hand_written_port_s_mistake_fails_where_it_is_made(name, variant, size):
    """Each mistake made in a PyTorch port, checked against the correct one: every stage
    before the one where the mistake is made passes, that one fails by far, shapes all match."""
    torch_ = backend_or_skip("torch")
    with PITFALLS[name].broken(torch_) as broken:
        v = check({"torch": torch_, "port": patched(broken, name="port")}, variant, size)
    r = rows(v)
    made = PITFALLS[name].where(spec.resolve(variant, **inputs.full_options(spec.VARIANTS[variant])), size)
    names = list(r)
    assert all(r[n].passed for n in names[: names.index(made)])
    assert not r[made].passed and r[made].agreement["port"].max_rel > 100 * REL_TOL
    assert all(s == r[n].expected for n in r for s in r[n].shapes.values())
