"""TF-slim's inception_v1 checkpoints through ``port`` (issue 15): TF1-style checkpoints
written with TensorFlow's own writer under slim's names from seeded values
(``tests/slim_files.py``), ported to every framework, and the ported models' logits
compared with a forward written independently from the published facts. Then what a
reader must refuse: missing, extra, mis-shaped and wrongly typed variables, cut or
corrupt shards, and an index declaring more than the network holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conformance import spec
from conformance.canonical import canonical_shapes
from conformance.check.compare import REL_TOL, agreement
from conformance.formats import naming, tfcheckpoint
from conformance.formats.port import PortError, port, read_checkpoint
from conformance.formats.registry import FORMATS

from . import hostile, slim_files
from .conftest import backend_or_skip
from .helpers import command, random_images
from .test_hostile import assert_refused

pytest.importorskip("tensorflow")

VARIANT = "googlenet_slim"
SIZE = 193  # the smallest size the 7x7 VALID head pool admits: an odd one, where SAME pads (3, 3) at 7x7/2


@pytest.fixture(scope="module")
def values() -> dict[str, np.ndarray]:
    return slim_files.seeded(seed=15)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, values) -> Path:
    """inception_v1.ckpt (.index + .data-00000-of-00001), with a global_step as TF1's Saver keeps."""
    prefix = tmp_path_factory.mktemp("slim") / "inception_v1.ckpt"
    return slim_files.write(prefix, {**values, "global_step": np.int64(42)})


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return random_images(2, SIZE, seed=15, uniform=True)


@pytest.fixture(scope="module")
def expected(values, image) -> np.ndarray:
    return slim_files.forward(values, image)


def copy(prefix: Path, to: Path) -> Path:
    """The checkpoint's files under another directory (to damage them)."""
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, to / f.name)
    return to / prefix.name


def assert_matches(logits: np.ndarray, expected: np.ndarray) -> None:
    a = agreement(expected, logits, logits=True)
    print(f"max abs {a.max_abs:.1e}, max rel {a.max_rel:.1e}, top-1 {a.top1:.0%}, top-5 {a.top5:.0%}")
    assert a.passed and a.max_rel <= REL_TOL, a


def test_the_suites_slim_names_are_upstreams():
    """The naming scheme, derived from the plan, gives exactly the graph's 230 variables
    (written down independently), each with the TensorFlow shape of its canonical key."""
    p = spec.resolve(VARIANT)
    names = naming.slim_names(p)
    shapes = slim_files.variables()
    assert set(names.values()) == set(shapes) and len(shapes) == 230
    assert sum(int(np.prod(s)) for s in shapes.values()) == 6_633_209
    canonical = dict(zip(names.values(), names, strict=True))
    for theirs, shape in shapes.items():
        ours = canonical_shapes(p)[canonical[theirs]]
        assert tfcheckpoint.to_canonical_layout(shape, ours)[0] == ours, theirs


@pytest.mark.parametrize(
    ("framework", "name"), [("torch", "out.pth"), ("keras", "out.weights.h5"), ("mxnet", "out.params")]
)
def test_port_to_each_framework_matches_the_independent_forward(tmp_path, checkpoint, image, expected, framework, name):
    backend_or_skip(framework)
    dst = tmp_path / name
    result = port(checkpoint, dst, VARIANT)
    assert result.passed and result.options["num_classes"] == 1001
    assert any("dropped global_step" in n for n in result.notes)
    p = spec.resolve(VARIANT)
    b, model = FORMATS[result.dst_format].load(dst, p, framework, None)  # as its users load it
    assert_matches(b.forward(model, image), expected)
    if framework == "mxnet":  # the fixed gammas Gluon saves for a BatchNorm without scale are read past
        back = port(dst, tmp_path / "back.safetensors", VARIANT)
        assert back.passed and any("dropped 57 BatchNorm gammas" in n for n in back.notes)


def test_port_by_index_name_and_transform_input(tmp_path, checkpoint, values):
    """The .index file names the checkpoint too; with --transform-input the model takes
    ImageNet-normalised RGB and feeds slim's [-1, 1] to conv1."""
    b = backend_or_skip("torch")
    ck = read_checkpoint(Path(str(checkpoint) + ".index"), VARIANT, transform_input=True)
    model = b.build(VARIANT, transform_input=True)
    b.from_canonical(model, ck.params)
    rgb = np.random.default_rng(1).uniform(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)
    mean, std = np.array(spec.tables.IMAGENET_MEAN)[:, None, None], np.array(spec.tables.IMAGENET_STD)[:, None, None]
    normalised = ((rgb - mean) / std).astype(np.float32)
    assert_matches(b.forward(model, normalised), slim_files.forward(values, rgb * 2 - 1))


def test_drop_background_keeps_imagenets_1000_classes(checkpoint, image, expected):
    b = backend_or_skip("torch")
    ck = read_checkpoint(checkpoint, VARIANT, drop_background=True)
    assert ck.plan.num_classes == 1000 and ck.params["fc.weight"].shape == (1000, 1024)
    assert any("dropped class 0 (background)" in n for n in ck.notes)
    model = b.build(VARIANT, num_classes=1000)
    b.from_canonical(model, ck.params)
    assert_matches(b.forward(model, image), expected[:, 1:])


def test_drop_background_needs_1001_classes(tmp_path, values):
    src = slim_files.write(tmp_path / "ten.ckpt", slim_files.seeded(0, classes=10))
    with pytest.raises(
        PortError, match=r"drop_background=True: removes class 0 of a 1001-class classifier.*has 10 classes"
    ):
        read_checkpoint(src, VARIANT, num_classes=10, drop_background=True)


# --------------------------------------------------------------------------------------
# Negative controls: the comparisons above fail on a broken port
# --------------------------------------------------------------------------------------


def test_negative_control_a_kernel_read_without_its_spatial_transpose(checkpoint, image, expected, monkeypatch):
    """(kh, kw, in, out) taken to (out, in, kw, kh): shapes still fit, and the port is
    consistent with itself, but its logits are not slim's."""
    b = backend_or_skip("torch")
    real = tfcheckpoint.to_canonical_layout

    def swapped(shape, ours):
        canonical_shape, convert = real(shape, ours)
        if len(canonical_shape) == 4:
            return canonical_shape, lambda a: convert(a).transpose(0, 1, 3, 2)
        return canonical_shape, convert

    monkeypatch.setattr(tfcheckpoint, "to_canonical_layout", swapped)
    ck = read_checkpoint(checkpoint, VARIANT)
    model = b.build(VARIANT)
    b.from_canonical(model, ck.params)
    a = agreement(expected, b.forward(model, image), logits=True)
    print(f"transposed kernels: max rel {a.max_rel:.1e}, top-1 {a.top1:.0%}")
    assert not a.passed


def test_negative_control_symmetric_padding(checkpoint, image, expected):
    """The same weights in torchvision's network (symmetric padding, a scale of 1):
    the independent forward tells them apart."""
    b = backend_or_skip("torch")
    ck = read_checkpoint(checkpoint, VARIANT)
    params = dict(ck.params)
    for u in spec.resolve("googlenet_bn", num_classes=1001).conv_units():
        params[f"{u.name}.bn.weight"] = np.ones(u.out_channels, np.float32)
    model = b.build("googlenet_bn", num_classes=1001)
    b.from_canonical(model, params)
    x = np.pad(image, ((0, 0), (0, 0), (0, 224 - SIZE), (0, 224 - SIZE)))  # torchvision's head is global
    a = agreement(slim_files.forward(ck_values(ck), x), b.forward(model, x), logits=True)
    print(f"symmetric padding: max rel {a.max_rel:.1e}, top-1 {a.top1:.0%}")
    assert not a.passed


def ck_values(ck) -> dict[str, np.ndarray]:
    """The checkpoint's values back under slim's names and layouts (for the forward)."""
    names = naming.slim_names(ck.plan)
    out = {}
    for key, value in ck.params.items():
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif key == "fc.weight":
            value = value.T[None, None]
        out[names[key]] = value
    return out


# --------------------------------------------------------------------------------------
# Strict reading
# --------------------------------------------------------------------------------------


def refused(src: Path, *needles: str, **options) -> str:
    with pytest.raises(PortError) as e:
        read_checkpoint(src, VARIANT, **options)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    return str(e.value)


def test_a_missing_variable_is_named(tmp_path, values):
    gone = "InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean"
    src = slim_files.write(tmp_path / "m.ckpt", {k: v for k, v in values.items() if k != gone})
    refused(src, f"missing variable '{gone}' (inception4a.branch2.1.bn.running_mean)")


def test_a_gamma_is_an_extra_variable(tmp_path, values):
    gamma = "InceptionV1/Conv2d_1a_7x7/BatchNorm/gamma"
    src = slim_files.write(tmp_path / "m.ckpt", {**values, gamma: np.ones(64, np.float32)})
    refused(src, f"unexpected key '{gamma}'")


def test_a_mis_shaped_variable_is_named(tmp_path, values):
    w = "InceptionV1/Mixed_5b/Branch_2/Conv2d_0a_3x3/weights"
    src = slim_files.write(tmp_path / "m.ckpt", {**values, w: np.zeros((5, 5, 32, 128), np.float32)})
    refused(src, "inception5a.branch3.1.conv.weight", "(128, 32, 5, 5)", f"TensorFlow {w} (5, 5, 32, 128)")


def test_another_class_count_is_told_to_pass_num_classes(tmp_path):
    src = slim_files.write(tmp_path / "m.ckpt", slim_files.seeded(0, classes=1000))
    refused(src, "has 1000 classes", "pass num_classes=1000")


def test_a_wrongly_typed_variable_is_refused(tmp_path, values):
    mean = "InceptionV1/Conv2d_2b_1x1/BatchNorm/moving_mean"
    src = slim_files.write(tmp_path / "m.ckpt", {**values, mean: np.zeros(64, np.int32)})
    refused(src, f"'conv2.bn.running_mean' is of dtype int32 ({mean}), not floating-point weights")


def test_float64_and_float16_are_converted_with_a_notice(tmp_path, values):
    w = "InceptionV1/Conv2d_2b_1x1/weights"
    src = slim_files.write(tmp_path / "m.ckpt", {**values, w: values[w].astype(np.float64)})
    ck = read_checkpoint(src, VARIANT)
    assert "converted 1 float64 tensors to float32" in ck.notes


def test_another_variant_is_refused_naming_the_right_one(checkpoint):
    with pytest.raises(PortError, match=r"read as TF-slim's inception_v1 \(variant='googlenet_slim'\)"):
        read_checkpoint(checkpoint, "googlenet_bn")


def test_truncated_shard(tmp_path, checkpoint):
    src = copy(checkpoint, tmp_path)
    data = Path(str(src) + ".data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    refused(src, "its data shards hold 13,266,422 bytes but its index declares 26,532,836 bytes")


def test_a_corrupt_shard_fails_its_checksum(tmp_path, checkpoint):
    src = copy(checkpoint, tmp_path)
    data = Path(str(src) + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    refused(src, str(src), "cannot read it as TensorFlow checkpoint")


def test_missing_shard_and_damaged_index(tmp_path, checkpoint):
    src = copy(checkpoint, tmp_path)
    Path(str(src) + ".data-00000-of-00001").unlink()
    refused(src, "its data shards are incomplete")
    src = copy(checkpoint, tmp_path)
    index = Path(str(src) + ".index")
    index.write_bytes(index.read_bytes()[:-3])
    refused(src, "a damaged TensorFlow checkpoint")


def test_the_checkpoint_is_read_not_written(tmp_path, checkpoint):
    with pytest.raises(PortError, match="TensorFlow checkpoint files are read here, not written"):
        port(checkpoint, tmp_path / "y.ckpt", VARIANT)


def test_an_index_declaring_half_a_million_classes(tmp_path):
    """A 10 KB index whose classifier declares 2 GB (the data shard holds 24 bytes):
    refused from its declarations, exit 2, under 1 GB."""
    declared = {name: (shape, "DT_FLOAT") for name, shape in slim_files.variables(classes=500_000).items()}
    src = slim_files.write_index(tmp_path / "x.ckpt", declared, b"\x00" * 24)
    assert Path(str(src) + ".index").stat().st_size < 64 << 10
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "y.pth"), "--variant", VARIANT))
    assert_refused(m, "'InceptionV1/Logits/Conv2d_0c_1x1/weights'", "declares float32 [500000, 1024] (2,048 MB)")


def test_an_index_declaring_more_than_the_shards_hold(tmp_path):
    """Every variable declared at its right shape, none of the values there."""
    declared = {name: (shape, "DT_FLOAT") for name, shape in slim_files.variables().items()}
    src = slim_files.write_index(tmp_path / "x.ckpt", declared, b"\x00" * 1024)
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "y.pth"), "--variant", VARIANT))
    assert_refused(m, "its data shards hold 1,024 bytes but its index declares 26,532,836 bytes")


def test_an_index_of_ten_thousand_variables(tmp_path):
    declared = {f"InceptionV1/v{i:05d}": ((1,), "DT_FLOAT") for i in range(10_000)}
    src = slim_files.write_index(tmp_path / "x.ckpt", declared, b"\x00" * 40_000)
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "y.pth"), "--variant", VARIANT))
    assert_refused(m, "declares 10,000 tensors")


def test_a_port_probes_the_prefix_once(tmp_path, checkpoint, monkeypatch):
    """The prefix is probed once, the format inferred once and the .index looked at once,
    though the port reads every variant's declarations (no --variant) before the one it
    takes, and each of those reads and the reader take the source."""
    from .test_port import count_resolving

    calls = count_resolving(monkeypatch)
    dst = tmp_path / "slim.safetensors"
    result = port(checkpoint, dst)
    assert result.passed and result.variant == VARIANT, result.notes
    assert calls["prefix", checkpoint] == calls["format_of", checkpoint] == 1, calls
    assert calls["sniff_probed", checkpoint] == 1, calls
    assert calls["prefix", dst] == calls["format_of", dst] == 1, calls
