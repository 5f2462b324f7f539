"""``--to keras-builtin``: a ``.keras`` of Keras's built-in layers only, loaded by
``keras.saving.load_model`` in a process that cannot import the suite, on each Keras
backend, agreeing with the reference; refused where Keras lacks a layer; and shown to
fail on a deliberately wrong padding."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import REL_TOL, agreement, identical
from conformance.formats import deploy, keras_builtin
from conformance.formats.base import built
from conformance.formats.port import PortError, VerificationError, init

from .conftest import backend_or_skip, cli
from .helpers import assert_refused

# Every variant the format can write at its own size, with the options that reach the
# most layers: aux heads where their pool has a built-in layer, the input transform.
WRITABLE = {
    "googlenet": {"aux_logits": True},
    "googlenet_bn": {"aux_logits": False, "transform_input": True},
    "googlenet_gluoncv": {"aux_logits": True},
    "googlenet_slim": {"transform_input": True},
    "googlenet_d2l": {},
    "googlenet_cifar": {},
    "inception_mnist": {},
    "residual_mnist": {},
}
CLASSES = {"googlenet": 10, "googlenet_bn": 10, "googlenet_gluoncv": 10, "googlenet_slim": 11}  # smaller heads


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, object, list[str]]]:
    """Each writable variant written once by ``init`` (the seeded weights), verified by
    port's own check: the file loaded in a fresh suite-less process on TensorFlow."""
    backend_or_skip("keras")
    backend_or_skip("torch")
    folder = tmp_path_factory.mktemp("keras_builtin")
    out = {}
    for variant, options in WRITABLE.items():
        log: list[str] = []
        dst = folder / f"{variant}.keras"
        result = init(
            dst,
            variant,
            "keras-builtin",
            num_classes=CLASSES.get(variant),
            aux_logits=options.get("aux_logits"),
            transform_input=options.get("transform_input", False),
            log=log.append,
        )
        out[variant] = (dst, result, log)
    return out


def test_every_variant_left_is_refused():
    """The table above is every variant the format does not refuse, and the refused
    ones are exactly the LRN variant and torchvision's aux pool."""
    for name, variant in spec.VARIANTS.items():
        said = keras_builtin.refusal(spec.resolve(name, aux_logits=variant.aux is not None))
        if name == "googlenet_lrn":
            assert "LocalResponseNorm" in said
        elif name == "googlenet_bn":
            assert "AdaptiveAvgPool2d" in said and "14 x 14 -> 4 x 4" in said
        else:
            assert name in WRITABLE and said == "", (name, said)
    assert keras_builtin.refusal(spec.resolve("googlenet_bn")) == ""


@pytest.mark.e2e  # suite-less processes load exported .keras files
@pytest.mark.parametrize("variant", list(WRITABLE))
def test_each_variant_loads_without_the_suite_and_agrees(written, variant):
    dst, result, log = written[variant]
    assert result.passed and result.dst_format == "keras-builtin", log
    assert result.target_framework == "keras.saving.load_model"
    for name, a in result.agreement.items():
        assert a.max_rel <= REL_TOL and a.top1 == 1.0 and a.top5 == 1.0, (name, a)
    heads = WRITABLE[variant].get("aux_logits")
    assert set(result.agreement) == ({"logits", "aux1", "aux2"} if heads else {"logits"})
    assert any("weights: bit-identical" in line for line in log), log
    assert dst.is_file() and zipfile.is_zipfile(dst)


def keras_classes(config: object) -> list[tuple[str, str]]:
    """(module, class_name) of every serialised object in a Keras config that is not
    Keras's own: a module outside ``keras``, or a registered name (a custom object's)."""
    found: list[tuple[str, str]] = []
    if isinstance(config, dict):
        if "class_name" in config:
            module = str(config.get("module") or "keras")
            registered = config.get("registered_name")
            if not (module == "keras" or module.startswith("keras.")) or registered not in (
                None,
                config["class_name"],
            ):
                found.append((module, str(config["class_name"])))
        for value in config.values():
            found += keras_classes(value)
    elif isinstance(config, list):
        for value in config:
            found += keras_classes(value)
    return found


@pytest.mark.e2e  # suite-less processes load exported .keras files
@pytest.mark.parametrize("variant", ["googlenet", "googlenet_bn", "inception_mnist"])
def test_the_config_names_only_keras_classes(written, variant):
    dst, _, _ = written[variant]
    with zipfile.ZipFile(dst) as z:
        config = json.loads(z.read("config.json"))
    assert config["class_name"] == "Functional"
    assert keras_classes(config) == []
    names = [layer["config"]["name"] for layer in config["config"]["layers"]]
    assert all("." not in name for name in names)  # the torch backend refuses "." in a variable's path
    assert {layer["class_name"] for layer in config["config"]["layers"]} >= {"Conv2D", "MaxPooling2D", "Dense"}


def test_the_config_check_finds_a_suite_class():
    """Negative control of the check above: the suite's own ``.keras`` config names its classes."""
    ours = {
        "module": "impl_keras.model",
        "class_name": "GoogLeNet",
        "registered_name": "conformance>GoogLeNet",
        "config": {"layers": [{"module": "keras.layers", "class_name": "Dense", "registered_name": None}]},
    }
    assert keras_classes(ours) == [("impl_keras.model", "GoogLeNet")]
    custom = {"module": "keras.layers", "class_name": "Pool2D", "registered_name": "conformance>Pool2D"}
    assert keras_classes(custom) == [("keras.layers", "Pool2D")]


@pytest.mark.e2e  # suite-less processes load exported .keras files
@pytest.mark.parametrize("keras_backend", ["jax", "torch"])
@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet_d2l"])
def test_it_loads_on_every_keras_backend(written, variant, keras_backend, monkeypatch):
    """The same file, ``keras.saving.load_model`` on the jax and torch backends in a
    fresh suite-less process, against the reference framework's logits."""
    if keras_backend == "jax":
        pytest.importorskip("jax")
    dst, _, _ = written[variant]
    options = WRITABLE[variant]
    plan = spec.resolve(
        variant,
        CLASSES.get(variant),
        bool(options.get("aux_logits")),
        bool(options.get("transform_input")),
    )
    params = {k: v.astype(np.float32) for k, v in canonical.random_params(plan, 0).items()}
    x = np.random.default_rng(1).standard_normal((2, plan.in_channels, plan.input_size, plan.input_size))
    x = x.astype(np.float32)
    b, model = built("torch", plan, params)
    ref = b.forward(model, x)
    with monkeypatch.context() as backend:  # the loading process's backend; this one keeps TensorFlow
        backend.setenv("KERAS_BACKEND", keras_backend)
        outputs, weights = deploy.run_fresh("keras-builtin", dst, x, aux=False)
    a = agreement(ref, outputs["logits"], logits=True)
    assert a.passed and a.top1 == 1.0 and a.top5 == 1.0, (keras_backend, a)
    loaded = keras_builtin.RUNTIME.to_canonical(deploy.Loaded(dst, plan, "keras-builtin", weights))
    assert loaded is not None and identical(params, loaded) == []


@pytest.mark.parametrize(
    "variant, needle",
    [("googlenet_lrn", "LocalResponseNorm"), ("googlenet_bn", "AdaptiveAvgPool2d")],
)
def test_a_variant_needing_a_missing_layer_is_refused_in_one_line(tmp_path, variant, needle):
    dst = tmp_path / "m.keras"
    r = cli("init", str(dst), "--variant", variant, "--to", "keras-builtin")
    assert_refused(r, variant, needle, "keras-builtin")
    assert list(tmp_path.iterdir()) == []


def test_a_padded_max_pool_on_a_signed_input_is_refused():
    """The zero padding of max pools is exact only on a ReLU's output: a variant whose
    padded max pool reads a conv without ReLU is refused rather than written wrong."""
    variant = dataclasses.replace(
        spec.GOOGLENET_D2L,
        name="signed_d2l",
        rows=spec.tables.with_rows(spec.GOOGLENET_D2L.rows, spec.Conv("conv3", 192, 3, padding=1, relu=False)),
    )
    said = keras_builtin.refusal(spec.resolve(variant))
    assert "maxpool2 pads a max pool whose input can be negative" in said and "-inf" in said


@pytest.mark.e2e  # suite-less processes load exported .keras files
def test_a_wrong_padding_fails_the_agreement_check(tmp_path, monkeypatch):
    """Negative control: ceil mode's extra cell padded on both sides instead of at the
    end only (googlenet_bn's maxpool1 on 112 needs (0, 1)) makes port's check fail, and
    nothing is written."""
    backend_or_skip("keras")
    backend_or_skip("torch")
    real = keras_builtin.pool_pads

    def symmetric(pool, size):
        before, after = real(pool, size)
        return (max(before, after),) * 2 if pool.ceil_mode else (before, after)

    monkeypatch.setattr(keras_builtin, "pool_pads", symmetric)
    dst = tmp_path / "wrong.keras"
    log: list[str] = []
    with pytest.raises(VerificationError, match="does not reproduce"):
        init(dst, "googlenet_bn", "keras-builtin", num_classes=10, aux_logits=False, log=log.append)
    assert any(line.strip().startswith("logits") and "FAIL" in line for line in log), log
    assert list(tmp_path.iterdir()) == []


def test_the_refusal_comes_before_any_output(tmp_path):
    with pytest.raises(PortError, match="LocalResponseNorm"):
        init(tmp_path / "m.keras", "googlenet_lrn", "keras-builtin")
    assert list(tmp_path.iterdir()) == []
