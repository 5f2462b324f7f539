"""Each implementation on its own: the four-function interface, counts with the
framework's own API, strict loading, input checks. The bit-identical round trip is the
harness's (tests/test_agreement.py), through each framework and the chain of all."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from conformance import canonical, interface, spec
from conformance.check.compare import identical

from .conftest import ROOT, backend_or_skip, full_plan, loaded_model
from .helpers import PUBLISHED


@pytest.mark.parametrize("variant,aux", sorted(PUBLISHED))
def test_parameter_counts_with_the_frameworks_own_api(backend, variant, aux):
    model = backend.build(variant, aux_logits=aux)
    assert backend.count_params(model) == PUBLISHED[variant, aux]


@pytest.mark.parametrize("variant", sorted(spec.VARIANTS))
def test_to_canonical_gives_exactly_the_canonical_keys_and_shapes(backend, variant):
    model = loaded_model(backend, variant)
    params = backend.to_canonical(model)
    shapes = canonical.canonical_shapes(full_plan(variant))
    assert list(params) == list(shapes)
    assert {k: v.shape for k, v in params.items()} == shapes
    assert all(v.dtype == np.float32 for v in params.values())


def test_fresh_build_is_initialised_and_differs_from_loaded(backend):
    model = backend.build("googlenet_bn")
    params = backend.to_canonical(model)
    w = params["inception4a.branch2.1.conv.weight"]
    assert 0.005 < float(w.std()) < 0.015  # torchvision's init: std 0.01
    assert np.all(params["conv1.bn.weight"] == 1) and np.all(params["conv1.bn.running_var"] == 1)
    logits = backend.forward(model, np.zeros((1, 3, 224, 224), np.float32))
    assert logits.shape == (1, 1000) and np.isfinite(logits).all()


def _strict_params():
    p = spec.resolve("googlenet")
    return canonical.random_params(p, 3)


def test_from_canonical_refuses_missing_key(backend):
    model = backend.build("googlenet")
    params = _strict_params()
    del params["inception5b.branch1.conv.bias"]
    with pytest.raises(canonical.CanonicalError, match=r"missing key 'inception5b.branch1.conv.bias'"):
        backend.from_canonical(model, params)


def test_from_canonical_refuses_extra_key(backend):
    model = backend.build("googlenet")
    params = _strict_params()
    params["aux1.fc1.weight"] = np.zeros((1024, 2048), np.float32)
    with pytest.raises(canonical.CanonicalError, match=r"unexpected key 'aux1.fc1.weight' \(shape \(1024, 2048\)\)"):
        backend.from_canonical(model, params)


def test_from_canonical_refuses_shape_mismatch_and_changes_nothing(backend):
    model = backend.build("googlenet")
    before = backend.to_canonical(model)
    params = _strict_params()
    params["conv1.conv.weight"] = params["conv1.conv.weight"].transpose(0, 1, 3, 2)[:, :, :, :5].copy()
    with pytest.raises(
        canonical.CanonicalError, match=r"'conv1.conv.weight': expected \(64, 3, 7, 7\), got \(64, 3, 7, 5\)"
    ):
        backend.from_canonical(model, params)
    assert identical(before, backend.to_canonical(model)) == []  # validated before any write


def test_forward_returns_logits_or_the_aux_tuple(backend):
    model = loaded_model(backend, "googlenet")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits = backend.forward(model, x)
    out = backend.forward(model, x, aux=True)
    assert isinstance(out, tuple) and len(out) == 3
    assert logits.shape == out[0].shape == out[1].shape == out[2].shape == (2, 1000)
    np.testing.assert_array_equal(logits, out[0])
    assert not np.allclose(out[1], out[2])  # aux2 and aux1 are different heads


def test_stages_cover_the_spec_in_nchw(backend):
    model = loaded_model(backend, "googlenet_bn")
    x = np.random.default_rng(0).standard_normal((1, 3, 97, 97)).astype(np.float32)
    got = {k: v.shape for k, v in backend.stages(model, x).items()}
    assert got == spec.expected_shapes(full_plan("googlenet_bn"), 97, batch=1)


def _as_trained(variant: str, x: np.ndarray) -> np.ndarray:
    """ImageNet mean/std-normalised RGB ``x`` as the variant's weights were trained on it:
    torchvision's Inception weights (x - 0.5) / 0.5, Caffe's BGR in 0-255 less (104, 117, 123)."""
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    rgb = x.astype(np.float64) * std + mean  # in 0-1
    if variant == "googlenet_bn":
        return ((rgb - 0.5) / 0.5).astype(np.float32)
    return (255 * rgb[:, ::-1] - np.array([104.0, 117.0, 123.0])[:, None, None]).astype(np.float32)


@pytest.mark.parametrize("variant,size", [("googlenet_bn", 97), ("googlenet_lrn", 224)])
def test_transform_input_remaps_the_input_as_its_weights_expect(backend, variant, size):
    plain, remapped = backend.build(variant), backend.build(variant, transform_input=True)
    params = canonical.random_params(spec.resolve(variant), 0)
    backend.from_canonical(plain, params)
    backend.from_canonical(remapped, params)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    want = backend.forward(plain, _as_trained(variant, x))
    np.testing.assert_allclose(backend.forward(remapped, x), want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert not np.allclose(backend.forward(remapped, x), backend.forward(plain, x), atol=1e-3)
    if variant == "googlenet_lrn":  # the channel order matters: RGB pixels are another image
        rgb = _as_trained(variant, x)[:, ::-1].copy()
        assert not np.allclose(backend.forward(plain, rgb), want, rtol=0, atol=1e-2 * np.abs(want).max())


@pytest.mark.parametrize(
    "x,message",
    [
        (np.zeros((1, 3, 224), np.float32), r"x: expected shape \(N, 3, H, W\), got \(1, 3, 224\)"),
        (np.zeros((1, 224, 224, 3), np.float32), r"x: expected shape \(N, 3, H, W\), got \(1, 224, 224, 3\)"),
        (np.zeros((1, 3, 224, 224), np.float64), "x: expected dtype float32, got float64"),
        (np.zeros((1, 3, 20, 20), np.float32), "is larger than its"),
    ],
)
def test_forward_rejects_bad_input_by_name(backend, x, message):
    with pytest.raises(ValueError, match=message):
        backend.forward(loaded_model(backend, "googlenet"), x)


def test_forward_rejects_aux_requests_it_cannot_honour(backend):
    model = loaded_model(backend, "googlenet")
    with pytest.raises(ValueError, match=r"aux=True: at input 97 x 97 the aux pool"):
        backend.forward(model, np.zeros((1, 3, 97, 97), np.float32), aux=True)
    plain = backend.build("googlenet")
    with pytest.raises(ValueError, match=r"built with aux_logits=False"):
        backend.forward(plain, np.zeros((1, 3, 224, 224), np.float32), aux=True)
    with pytest.raises(TypeError, match=r"x: expected a numpy.ndarray"):
        backend.forward(model, [[0.0]])


def test_build_rejects_unknown_option(backend):
    with pytest.raises(TypeError, match=r"transfrom_input"):
        backend.build("googlenet_bn", transfrom_input=True)


def test_keras_local_response_norm_matches_pytorch_and_tensorflow():
    """The small Keras LRN layer against PyTorch's and TensorFlow's own operators."""
    backend_or_skip("keras")
    torch = pytest.importorskip("torch")
    import keras
    import tensorflow as tf

    from impl_keras.layers import LocalResponseNorm

    lrn = spec.LRN("lrn", 5, 1e-4, 0.75, 1.0)
    x = (np.random.default_rng(0).standard_normal((2, 6, 5, 16)) * 40).astype(np.float32)  # NHWC
    ours = keras.ops.convert_to_numpy(LocalResponseNorm(lrn)(x))
    theirs = (
        torch.nn.functional.local_response_norm(torch.from_numpy(x.transpose(0, 3, 1, 2)), 5, 1e-4, 0.75, 1.0)
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    tf_lrn = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75).numpy()
    assert np.abs(ours - x).max() > 0.1 * np.abs(x).max()  # the normalisation is not negligible here
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
    np.testing.assert_allclose(ours, tf_lrn, rtol=0, atol=1e-5 * np.abs(theirs).max())


def caffe_ave_pool(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Caffe's average pooling (BVLC/caffe src/caffe/layers/pooling_layer.cpp, Forward_cpu,
    AVE), loop for loop, NCHW: the output size rounds up; each window divides by its
    extent inside the padded input, measured before it is clipped to the image."""
    n, c, height, width = x.shape
    pooled = [-(-(size + 2 * pad - kernel) // stride) + 1 for size in (height, width)]
    if pad:  # the last window must start inside the image or its left padding
        pooled = [
            p - 1 if (p - 1) * stride >= size + pad else p for p, size in zip(pooled, (height, width), strict=True)
        ]
    out = np.zeros((n, c, *pooled), np.float64)
    for ph in range(pooled[0]):
        for pw in range(pooled[1]):
            hstart, wstart = ph * stride - pad, pw * stride - pad
            hend, wend = min(hstart + kernel, height + pad), min(wstart + kernel, width + pad)
            pool_size = (hend - hstart) * (wend - wstart)
            hstart, wstart, hend, wend = max(hstart, 0), max(wstart, 0), min(hend, height), min(wend, width)
            out[:, :, ph, pw] = x[:, :, hstart:hend, wstart:wend].sum(axis=(2, 3)) / pool_size
    return out


def run_pool(backend, pool: spec.Pool, x: np.ndarray) -> np.ndarray:
    """One pool layer of ``backend``'s own ``layers.py`` on NCHW ``x``."""
    layers = importlib.import_module(f"impl_{backend.name}.layers")
    if backend.name == "torch":
        import torch

        return layers.make_pool(pool)(torch.from_numpy(x)).numpy()
    if backend.name == "keras":
        import keras

        return keras.ops.convert_to_numpy(layers.make_pool(pool)(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    import mxnet as mx

    return layers.make_pool(pool)(mx.nd.array(x)).asnumpy()


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("size", [12, 13, 14, 15])
def test_ceil_mode_average_pool_divides_as_caffe(backend, size, padding):
    """Caffe's aux heads pool avg 5x5/3 rounding up: on a 12 or 13 map the last window
    is clipped, and Caffe divides by the clipped window (PyTorch's count_include_pad rule:
    padding counts, the overhang past it does not). Each framework's pool agrees."""
    pool = spec.Pool("pool", "avg", 5, 3, padding=padding, ceil_mode=True)
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32) + 1.0
    want = caffe_ave_pool(x, 5, 3, padding)
    got = run_pool(backend, pool, x)
    assert got.shape == want.shape == (2, 3, *[spec.pool_out(size, 5, 3, padding, True)] * 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    clipped = (spec.pool_out(size, 5, 3, padding, True) - 1) * 3 - padding + 5 > size + padding
    full_window = caffe_ave_pool(np.pad(x, [(0, 0), (0, 0), (0, 5), (0, 5)]), 5, 3, padding)[
        ..., : got.shape[2], : got.shape[3]
    ]
    assert clipped == (not np.allclose(got, full_window, rtol=0, atol=1e-3)), "dividing by 25 is what a clip changes"


def test_the_package_exports_exactly_the_interface(backend):
    """``conformance.interface.Backend`` names the functions once; each package's
    ``__all__`` and attributes follow it (plus its native GoogLeNet class and the
    deployment exports only its framework has, each used by ``formats.deploy``)."""
    assert all(callable(getattr(backend, f)) or f in ("name", "MODES") for f in interface.FUNCTIONS)
    extra = set(backend.__all__) - (set(interface.FUNCTIONS) - {"name"}) - {"GoogLeNet"}
    assert (set(interface.FUNCTIONS) - {"name"}) | {"GoogLeNet"} <= set(backend.__all__)
    deploy = (ROOT / "conformance" / "formats" / "deploy.py").read_text()
    for f in extra:
        assert f.startswith("to_") and callable(getattr(backend, f)) and f"b.{f}(" in deploy, f
