"""The canonical checkpoint: names, strict validation, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, files, spec

from .helpers import seeded

DATA = Path(__file__).parent / "data"


def test_googlenet_bn_keys_are_torchvisions():
    """Keys and shapes of torchvision 0.29.1's googlenet(aux_logits=True).state_dict(),
    recorded by scripts/make_torchvision_reference.py."""
    recorded = json.loads((DATA / "torchvision_googlenet_keys.json").read_text())
    tv = {k: tuple(v) for k, v in recorded.items() if not k.endswith("num_batches_tracked")}
    assert canonical.canonical_shapes(spec.resolve("googlenet_bn", aux_logits=True)) == tv
    assert list(canonical.canonical_shapes(spec.resolve("googlenet_bn", aux_logits=True))) == list(tv)


def test_googlenet_keys_have_conv_bias_and_no_bn():
    keys = canonical.canonical_shapes(spec.resolve("googlenet", aux_logits=True))
    assert keys["conv1.conv.weight"] == (64, 3, 7, 7) and keys["conv1.conv.bias"] == (64,)
    assert keys["inception3a.branch3.1.conv.weight"] == (32, 16, 5, 5)
    assert keys["inception3a.branch4.1.conv.weight"] == (32, 192, 1, 1)
    assert keys["aux1.fc1.weight"] == (1024, 2048) and keys["aux2.conv.conv.weight"] == (128, 528, 1, 1)
    assert not any(".bn." in k for k in keys)


def test_random_params_are_seeded_float32_and_complete():
    p = spec.resolve("googlenet_bn", aux_logits=True)
    a, b, c = (canonical.random_params(p, s) for s in (0, 0, 1))
    assert list(a) == list(canonical.canonical_shapes(p))
    assert all(v.dtype == np.float32 for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc.weight"], c["fc.weight"])
    var = a["conv1.bn.running_var"]
    assert var.min() >= 1e-3 and var.max() <= 1e-2  # comparable to eps: an eps slip shows


def test_validate_names_missing_key_with_expected_shape():
    p, params = seeded("googlenet")
    del params["inception4c.branch2.1.conv.weight"]
    with pytest.raises(
        canonical.CanonicalError,
        match=r"missing key 'inception4c.branch2.1.conv.weight' \(expected shape \(256, 128, 3, 3\)\)",
    ):
        canonical.validate(p, params)


def test_validate_names_extra_key():
    p, params = seeded("googlenet")
    params["conv1.bn.weight"] = np.ones(64, np.float32)
    with pytest.raises(canonical.CanonicalError, match=r"unexpected key 'conv1.bn.weight' \(shape \(64,\)\)"):
        canonical.validate(p, params)


def test_validate_names_shape_mismatch_with_both_shapes():
    p, params = seeded("googlenet")
    params["inception3a.branch3.1.conv.weight"] = np.zeros((32, 16, 3, 3), np.float32)
    with pytest.raises(
        canonical.CanonicalError,
        match=r"shape mismatch at 'inception3a.branch3.1.conv.weight': "
        r"expected \(32, 16, 5, 5\), got \(32, 16, 3, 3\)",
    ):
        canonical.validate(p, params)


def test_validate_rejects_other_dtypes_and_non_arrays():
    p, params = seeded("googlenet")
    params["fc.bias"] = params["fc.bias"].astype(np.float64)
    with pytest.raises(canonical.CanonicalError, match=r"'fc.bias': expected float32, got float64"):
        canonical.validate(p, params)
    params["fc.bias"] = [0.0] * 1000
    with pytest.raises(canonical.CanonicalError, match=r"'fc.bias': expected a numpy.ndarray, got list"):
        canonical.validate(p, params)


def test_validate_rejects_the_other_variant():
    p = spec.resolve("googlenet_bn")
    _, params = seeded("googlenet")
    with pytest.raises(canonical.CanonicalError, match=r"do not fit googlenet_bn"):
        canonical.validate(p, params)


def test_save_load_round_trip_and_metadata(tmp_path):
    p, params = seeded("googlenet")
    path = canonical.save(params, tmp_path / "w.safetensors", p)
    loaded = canonical.load(path)
    assert sorted(loaded) == sorted(params)  # safetensors stores keys sorted; names carry meaning
    assert all(loaded[k].tobytes() == params[k].tobytes() for k in params)
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        assert f.metadata()["variant"] == "googlenet"
    assert [x.name for x in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


def test_save_never_overwrites_silently(tmp_path):
    p, params = seeded("googlenet")
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(files.OutputError, match=r"already exists"):
        canonical.save(params, target, p)
    assert target.read_bytes() == b"precious"
    canonical.save(params, target, p, overwrite=True)
    assert canonical.load(target).keys() == params.keys()


def test_save_validates_before_writing(tmp_path):
    p, params = seeded("googlenet")
    del params["fc.bias"]
    with pytest.raises(canonical.CanonicalError, match=r"missing key 'fc.bias'"):
        canonical.save(params, tmp_path / "w.safetensors", p)
    assert not list(tmp_path.iterdir())
