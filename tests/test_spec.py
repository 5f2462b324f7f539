"""Spec arithmetic, with no framework imported."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import spec
from conformance.canonical import canonical_shapes
from conformance.spec.shapes import trace
from conformance.spec.tables import IMAGENET_MEAN, IMAGENET_STD

from .helpers import PUBLISHED

# The paper's Table 1 (https://arxiv.org/abs/1409.4842): in, 1x1, 3x3red, 3x3, 5x5red, 5x5, pool proj, out.
TABLE1 = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32, 256),
    "inception3b": (256, 128, 128, 192, 32, 96, 64, 480),
    "inception4a": (480, 192, 96, 208, 16, 48, 64, 512),
    "inception4b": (512, 160, 112, 224, 24, 64, 64, 512),
    "inception4c": (512, 128, 128, 256, 24, 64, 64, 512),
    "inception4d": (512, 112, 144, 288, 32, 64, 64, 528),
    "inception4e": (528, 256, 160, 320, 32, 128, 128, 832),
    "inception5a": (832, 256, 160, 320, 32, 128, 128, 832),
    "inception5b": (832, 384, 192, 384, 48, 128, 128, 1024),
}

# torchvision's shape comments at 224 x 224.
SHAPES_224 = {
    "conv1": (64, 112, 112),
    "maxpool1": (64, 56, 56),
    "conv2": (64, 56, 56),
    "conv3": (192, 56, 56),
    "maxpool2": (192, 28, 28),
    "inception3a": (256, 28, 28),
    "inception3b": (480, 28, 28),
    "maxpool3": (480, 14, 14),
    "inception4a": (512, 14, 14),
    "inception4b": (512, 14, 14),
    "inception4c": (512, 14, 14),
    "inception4d": (528, 14, 14),
    "inception4e": (832, 14, 14),
    "maxpool4": (832, 7, 7),
    "inception5a": (832, 7, 7),
    "inception5b": (1024, 7, 7),
}


@pytest.mark.parametrize(
    "variant", sorted(n for n, v in spec.VARIANTS.items() if any(isinstance(r, spec.Inception) for r in v.rows))
)
def test_channel_table_and_input_channels(variant):
    p = spec.resolve(variant)
    blocks = {s.name: s for s in p.stages if isinstance(s, spec.InceptionUnit)}
    assert list(blocks) == list(TABLE1)
    for name, (cin, c1, c3r, c3, c5r, c5, pp, out) in TABLE1.items():
        b = blocks[name]
        assert b.in_channels == cin
        assert b.out_channels == out
        convs = [op for branch in b.branches for op in branch if isinstance(op, spec.ConvUnit)]
        stacked = [(c5, c5)] * (p.variant.branch3.depth - 1)  # pytorch-cifar100's second 3x3
        assert [(u.in_channels, u.out_channels) for u in convs] == [
            (cin, c1),
            (cin, c3r),
            (c3r, c3),
            (cin, c5r),
            (c5r, c5),
            *stacked,
            (cin, pp),
        ]


def test_variant_differences_are_data():
    g, bn = spec.resolve("googlenet", aux_logits=True), spec.resolve("googlenet_bn", aux_logits=True)
    b3 = {p.variant.name: p.stages[5].branches[2][1].kernel for p in (g, bn)}
    assert b3 == {"googlenet": 5, "googlenet_bn": 3}
    pools = {p.variant.name: next(s for s in p.stages if s.name == "maxpool4") for p in (g, bn)}
    assert (pools["googlenet"].kernel, pools["googlenet_bn"].kernel) == (3, 2)
    assert all(p.ceil_mode for p in pools.values())
    assert isinstance(g.aux[0].pool, spec.Pool) and g.aux[0].pool.kernel == 5
    assert isinstance(bn.aux[0].pool, spec.AdaptiveAvgPool) and bn.aux[0].pool.size == 4
    assert (g.dropout, bn.dropout) == (0.4, 0.2)
    assert g.variant.convs.norm is None and bn.variant.convs.norm == spec.BatchNormSettings(eps=1e-3, momentum=0.1)
    assert all(u.bias for u in g.conv_units()) and not any(u.bias for u in bn.conv_units())


@pytest.mark.parametrize("variant", sorted(v for v in spec.VARIANTS if spec.VARIANTS[v].input.size == 224))
def test_shapes_at_224_match_torchvision_comments(variant):
    v = spec.VARIANTS[variant]
    shapes = spec.expected_shapes(spec.resolve(variant, aux_logits=v.aux is not None), 224, batch=2)
    assert {k: v[1:] for k, v in shapes.items() if k in SHAPES_224} == SHAPES_224
    assert shapes["flatten"] == (2, 1024) and shapes["logits"] == (2, v.head.classes)
    if v.aux is not None:
        assert shapes["aux1"] == shapes["aux2"] == (2, 1000)


def _tf_same(size, k, s):
    """TensorFlow's SAME (tensorflow/core/framework/kernel_shape_util.cc), written out:
    out = ceil(size / s), pad total = max((out - 1) * s + k - size, 0), before = total // 2."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, (total // 2, total - total // 2)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 14, 27, 56, 111, 112, 193, 207, 223, 224])
@pytest.mark.parametrize(("k", "s"), [(1, 1), (3, 1), (7, 2), (3, 2), (2, 2), (1, 2)])
def test_same_padding_is_tensorflows(size, k, s):
    out, pads = _tf_same(size, k, s)
    assert spec.same_pads(size, k, s) == pads
    assert spec.conv_out(size, k, s, 0, same=True) == spec.pool_out(size, k, s, 0, False, same=True) == out


def test_googlenet_slim_is_tf_slims_inception_v1():
    """Its published figures: 230 variables, 6,633,209 values (6,618,649 trainable and
    14,560 moving statistics), SAME everywhere, a 7x7/1 VALID head pool."""
    p = spec.resolve("googlenet_slim")
    assert spec.count_params(p) == (6_618_649, 14_560)
    assert all(
        u.same and u.padding == 0 and not u.bias and u.norm == spec.BatchNormSettings(1e-3, 0.0003, scale=False)
        for u in p.conv_units()
    )
    assert p.num_classes == 1001 and p.dropout == 0.2 and not p.aux
    assert spec.admitted(p) == ((193, 224),)
    at224 = spec.stage_shapes(p, 224)
    assert (
        at224["conv1"] == (64, 112, 112) and at224["maxpool4"] == (832, 7, 7) and at224["inception5b"] == (1024, 7, 7)
    )
    assert spec.same_pads(224, 7, 2) == (2, 3) and spec.same_pads(112, 3, 2) == (0, 1)
    assert {u.kernel for u in p.conv_units() if ".branch3.1" in u.name} == {3}


def _torch_pool_out(size, k, s, p, ceil):
    """PyTorch's formula written out independently (aten pooling_output_shape)."""
    out = math.floor((size + 2 * p - k + ((s - 1) if ceil else 0)) / s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


POOLS = [(3, 2, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (5, 3, 0)]  # kernel, stride, padding
SIZES = [1, 2, 3, 4, 5, 6, 7, 13, 14, 15, 56, 97, 112, 113, 224, 225]


@pytest.mark.parametrize(
    "size,k,s,p", [(size, *pool) for size in SIZES for pool in POOLS if size + 2 * pool[2] >= pool[0]]
)
@pytest.mark.parametrize("ceil", [False, True])
def test_pool_out_matches_pytorch_formula(size, k, s, p, ceil):
    assert spec.pool_out(size, k, s, p, ceil) == _torch_pool_out(size, k, s, p, ceil)


@pytest.mark.parametrize(
    "size,k,s,p", [(size, *pool) for size in SIZES for pool in POOLS if size + 2 * pool[2] < pool[0]]
)
def test_a_window_larger_than_its_padded_input_is_not_admitted(size, k, s, p):
    """PyTorch runs such a ceil-mode window, MXNet refuses: the spec admits neither."""
    pool = spec.Pool("pool", "max", k, s, p, ceil_mode=True)
    assert not spec.window_fits(pool, (1, size, size))


def test_odd_sizes_and_aux_admission():
    g = spec.resolve("googlenet", aux_logits=True)
    assert spec.stage_shapes(g, 225)["conv1"] == (64, 113, 113)
    assert spec.stage_shapes(g, 225)["maxpool1"] == (64, 56, 56)  # ceil((113 - 3) / 2) + 1
    assert spec.stage_shapes(g, 97)["inception5b"] == (1024, 3, 3)
    # avg 5x5/3 gives fc1's 4 x 4 only from a 14..16 map at 4a: inputs 223..270.
    assert spec.stage_shapes(g, 222)["inception4a"][1:] == (13, 13)
    assert spec.stage_shapes(g, 270)["inception4a"][1:] == (16, 16)
    assert spec.stage_shapes(g, 271)["inception4a"][1:] == (17, 17)
    assert [s for s in range(150, 300) if spec.aux_admits(g, s)] == list(range(223, 271))
    bn = spec.resolve("googlenet_bn", aux_logits=True)
    assert spec.aux_admits(bn, 97)  # the adaptive pool admits any size
    assert spec.adaptive_windows(14, 4) == [(0, 4), (3, 7), (7, 11), (10, 14)]
    assert "aux1" not in spec.expected_shapes(g, 97)


@pytest.mark.parametrize("variant,aux", sorted(PUBLISHED))
def test_parameter_counts_match_published_figures(variant, aux):
    assert spec.count_params(spec.resolve(variant, aux_logits=aux)) == PUBLISHED[variant, aux]


def test_bn_statistics_by_hand():
    # Two statistics (mean, variance) per BatchNorm channel; one BatchNorm per conv.
    stem = 64 + 64 + 192
    blocks = sum(c1 + c3r + c3 + c5r + c5 + pp for _, c1, c3r, c3, c5r, c5, pp, _ in TABLE1.values())
    assert spec.count_params(spec.resolve("googlenet_bn"))[1] == 2 * (stem + blocks)
    assert spec.count_params(spec.resolve("googlenet_bn", aux_logits=True))[1] == 2 * (stem + blocks + 2 * 128)


def inception_params_by_hand() -> int:
    """Conv kernels + biases of the nine blocks, from Table 1, with a 5x5 branch 3."""
    return sum(
        cin * c1 + c1 + cin * c3r + c3r + c3r * c3 * 9 + c3 + cin * c5r + c5r + c5r * c5 * 25 + c5 + cin * pp + pp
        for cin, c1, c3r, c3, c5r, c5, pp, _ in TABLE1.values()
    )


def test_parameter_count_by_hand_for_googlenet():
    # the stem's conv kernels + biases, the blocks, then the fc.
    stem = (64 * 3 * 49 + 64) + (64 * 64 + 64) + (192 * 64 * 9 + 192)
    blocks = inception_params_by_hand()
    fc = 1024 * 1000 + 1000
    aux = lambda cin: (cin * 128 + 128) + (2048 * 1024 + 1024) + (1024 * 1000 + 1000)  # noqa: E731
    assert stem + blocks + fc == PUBLISHED["googlenet", False][0]
    assert stem + blocks + fc + aux(512) + aux(528) == PUBLISHED["googlenet", True][0]


def test_googlenet_d2l_parameter_count_by_hand():
    # 1-channel 7x7 stem conv, the same Inception blocks as the paper network, a 10-way fc.
    stem = (64 * 1 * 49 + 64) + (64 * 64 + 64) + (192 * 64 * 9 + 192)
    blocks = inception_params_by_hand()
    fc = 1024 * 10 + 10
    assert stem + blocks + fc == 5_977_530
    assert spec.count_params(spec.resolve("googlenet_d2l")) == (5_977_530, 0)
    assert (
        spec.resolve("googlenet_d2l").num_classes == 10
        and spec.resolve("googlenet_d2l", num_classes=1000).num_classes == 1000
    )


def test_googlenet_lrn_is_the_paper_network_plus_two_parameter_free_lrns():
    p, paper = spec.resolve("googlenet_lrn", aux_logits=True), spec.resolve("googlenet", aux_logits=True)
    assert spec.count_params(p) == spec.count_params(paper) == (13_378_280, 0)
    names = [s.name for s in p.stages]
    assert names[:7] == ["conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"]
    assert all(s == spec.LRN(s.name, 5, 1e-4, 0.75, 1.0) for s in p.stages if isinstance(s, spec.LRN))
    assert spec.expected_shapes(p, 224)["lrn2"] == (1, 192, 56, 56)


def aux_sizes(p: spec.Plan, sizes: range) -> list[int]:
    """Input sizes at which the aux heads alone run: their pool gives fc1 its 4 x 4 map,
    whatever the head after inception5b makes of the size."""
    ok = []
    for size in sizes:
        out: dict[str, tuple[int, int, int]] = {}
        try:
            trace(p.stages, (p.in_channels, size, size), out)
        except spec.SpecError:
            continue
        if all(spec.window_fits(a.pool, out[a.tap]) and spec.op_chw(a.pool, out[a.tap])[1:] == (4, 4) for a in p.aux):
            ok.append(size)
    return ok


def test_googlenet_lrn_pools_as_caffe():
    """Caffe rounds every pool up (pooling_layer.cpp), the aux heads' avg 5x5/3 too
    (loss1/ave_pool, loss2/ave_pool), and its head is a fixed 7x7/1 average
    (pool5/7x7_s1), which needs a 7 x 7 map: Caffe's network runs at 223-254 only."""
    p, paper = spec.resolve("googlenet_lrn", aux_logits=True), spec.resolve("googlenet", aux_logits=True)
    assert p.aux[0].pool == spec.Pool("aux1.pool", "avg", 5, 3, ceil_mode=True)
    assert p.head_pool == spec.Pool("avgpool", "avg", 7, 1, ceil_mode=True)
    assert all(s.ceil_mode for s in p.stages if isinstance(s, spec.Pool))
    assert aux_sizes(p, range(100, 400)) == list(range(191, 239))  # tap maps 12-14 give 4 x 4
    assert aux_sizes(paper, range(100, 400)) == list(range(223, 271))  # rounding down: 14-16
    assert spec.admitted(p) == ((223, 254),)
    assert [s for s in range(223, 255) if spec.aux_admits(p, s)] == list(range(223, 239))
    assert spec.expected_shapes(p, 223)["inception5b"] == (1, 1024, 7, 7) and "aux1" in spec.expected_shapes(p, 223)
    assert spec.expected_shapes(p, 254)["inception5b"] == (1, 1024, 7, 7) and "aux1" not in spec.expected_shapes(p, 254)
    with pytest.raises(
        spec.SpecError, match=r"input size 222: .* 6 x 6 map; fc expects 1 x 1 \(googlenet_lrn runs at 223-254\)"
    ):
        spec.stage_shapes(p, 222)
    with pytest.raises(spec.SpecError, match=r"input size 255: the head pool turns the 8 x 8 map into 2 x 2"):
        spec.stage_shapes(p, 255)


def test_input_transforms_are_torchvisions_and_caffes():
    """Both take ImageNet mean/std-normalised RGB: torchvision's back to (x - 0.5) / 0.5,
    Caffe's to BGR pixels in 0-255 less its mean pixel (104, 117, 123), B first."""
    rgb01 = np.random.default_rng(0).uniform(0, 1, (3, 5))  # three channels, five pixels
    mean, std = np.array(IMAGENET_MEAN)[:, None], np.array(IMAGENET_STD)[:, None]
    x = (rgb01 - mean) / std

    def apply(t: spec.InputTransform) -> np.ndarray:
        return np.stack([x[o] * s + b for o, s, b in zip(t.order, t.scale, t.shift, strict=True)])

    np.testing.assert_allclose(apply(spec.GOOGLENET_BN.input.transform), (rgb01 - 0.5) / 0.5, atol=1e-12)
    bgr255 = 255 * rgb01[::-1] - np.array([104.0, 117.0, 123.0])[:, None]
    np.testing.assert_allclose(apply(spec.GOOGLENET_LRN.input.transform), bgr255, atol=1e-9)
    assert spec.resolve("googlenet_lrn", transform_input=True).transform.order == (2, 1, 0)


def test_d2l_shapes_at_96():
    shapes = spec.expected_shapes(spec.resolve("googlenet_d2l"), 96)
    assert shapes["conv1"] == (1, 64, 48, 48) and shapes["maxpool1"] == (1, 64, 24, 24)
    assert shapes["maxpool4"] == (1, 832, 3, 3) and shapes["logits"] == (1, 10)
    assert "aux1" not in shapes


def test_multiply_adds():
    rows = {r.name: r for r in spec.layer_counts(spec.resolve("googlenet"), 224)}
    assert rows["conv1"].macs == 112 * 112 * 64 * 3 * 7 * 7
    assert rows["inception3a.branch3.1"].macs == 28 * 28 * 32 * 16 * 5 * 5
    assert rows["fc"].macs == 1024 * 1000
    total = sum(r.macs for r in rows.values())
    assert total == 1_582_671_872  # "1.5 billion multiply-adds" in the paper (section 5)
    assert sum(r.params for r in rows.values()) == PUBLISHED["googlenet", False][0]
    # aux heads count where they run, and cost nothing where the size shuts them out
    aux_rows = {r.name: r for r in spec.layer_counts(spec.resolve("googlenet", aux_logits=True), 97)}
    assert aux_rows["aux1.fc1"].macs == 0 and aux_rows["aux1.fc1"].params == 2048 * 1024 + 1024


def test_resolve_rejects_bad_options_with_their_names():
    with pytest.raises(spec.SpecError, match=r"variant: unknown 'resnet'"):
        spec.resolve("resnet")
    with pytest.raises(TypeError, match=r"colour"):
        spec.resolve("googlenet", colour=True)  # type: ignore[call-arg]
    with pytest.raises(spec.SpecError, match=r"transform_input: variant 'googlenet'"):
        spec.resolve("googlenet", transform_input=True)
    with pytest.raises(spec.SpecError, match=r"aux_logits: variant 'googlenet_d2l' has no aux heads"):
        spec.resolve("googlenet_d2l", aux_logits=True)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(spec.SpecError, match=r"num_classes"):
            spec.resolve("googlenet", num_classes=bad)
    with pytest.raises(spec.SpecError, match=r"the maxpool3 window \(3 x 3\) is larger than its 2 x 2 input"):
        spec.stage_shapes(spec.resolve("googlenet"), 16)
    with pytest.raises(
        spec.SpecError, match=r"head pool's 7 x 7 window is larger than the 3 x 3 map; fc expects 1 x 1"
    ):
        spec.stage_shapes(spec.resolve("googlenet_gluoncv"), 97)
    with pytest.raises(spec.SpecError, match=r"turns the 15 x 15 map into 2 x 2; fc expects 1 x 1"):
        spec.stage_shapes(spec.resolve("googlenet_gluoncv"), 500)


def test_spec_imports_no_framework():
    code = (
        "import sys, conformance.spec, conformance.canonical, conformance.check.harness; "
        "print(sorted({'torch', 'keras', 'tensorflow', 'mxnet'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


def test_googlenet_cifar_parameter_count_by_hand():
    # Stem: three bias-free 3x3 convs, each + BatchNorm (scale, shift).
    stem = (64 * 3 * 9 + 2 * 64) + (64 * 64 * 9 + 2 * 64) + (192 * 64 * 9 + 2 * 192)
    # Blocks: every conv keeps its bias before BatchNorm (3 per channel); branch 3 is
    # 1x1 -> 3x3 -> 3x3.
    blocks = sum(
        cin * c1
        + 3 * c1
        + cin * c3r
        + 3 * c3r
        + c3r * c3 * 9
        + 3 * c3
        + cin * c5r
        + 3 * c5r
        + c5r * c5 * 9
        + 3 * c5
        + c5 * c5 * 9
        + 3 * c5
        + cin * pp
        + 3 * pp
        for cin, c1, c3r, c3, c5r, c5, pp, _ in TABLE1.values()
    )
    fc = 1024 * 100 + 100
    assert stem + blocks + fc == 6_402_564
    stats = 2 * (
        64 + 64 + 192 + sum(c1 + c3r + c3 + c5r + 2 * c5 + pp for _, c1, c3r, c3, c5r, c5, pp, _ in TABLE1.values())
    )
    assert spec.count_params(spec.resolve("googlenet_cifar")) == (6_402_564, stats) == (6_402_564, 16_064)


def test_googlenet_cifar_reproduces_pytorch_cifar100s_batchnorm_eps_quirk():
    """``nn.BatchNorm2d(n5x5, n5x5)``: the second argument is eps. Only branch 3's first
    3x3 has it; every other BatchNorm has PyTorch's default 1e-5."""
    p = spec.resolve("googlenet_cifar")
    eps = {u.name: u.norm.eps for u in p.conv_units()}
    assert eps["inception3a.branch3.1"] == 32.0 and eps["inception5b.branch3.1"] == 128.0
    assert {e for n, e in eps.items() if ".branch3.1" not in n} == {1e-5}
    shapes = spec.expected_shapes(p, 32)
    assert shapes["maxpool2"] == (1, 192, 16, 16) and shapes["inception5b"] == (1, 1024, 4, 4)


def test_inception_mnist_parameter_count_by_hand():
    # InceptionA(cin): 1x1 16 | 1x1 16 -> 5x5 24 | 1x1 16 -> 3x3 24 -> 3x3 24 | pool -> 1x1 24
    def inception_a(cin: int) -> int:
        return (
            (cin * 16 + 16)
            + (cin * 16 + 16)
            + (16 * 24 * 25 + 24)
            + (cin * 16 + 16)
            + (16 * 24 * 9 + 24)
            + (24 * 24 * 9 + 24)
            + (cin * 24 + 24)
        )

    conv1, conv2 = 1 * 10 * 25 + 10, 88 * 20 * 25 + 20
    fc = 88 * 4 * 4 * 10 + 10  # Liu's Linear(1408, 10)
    assert conv1 + inception_a(10) + conv2 + inception_a(20) + fc == 97_298
    assert spec.count_params(spec.resolve("inception_mnist")) == (97_298, 0)


def test_residual_mnist_parameter_count_by_hand():
    def residual(c: int) -> int:
        return 2 * (c * c * 9 + c)

    c1, c2, fc = 1 * 16 * 25 + 16, 16 * 32 * 25 + 32, 512 * 10 + 10  # Liu's Linear(512, 10)
    assert c1 + residual(16) + c2 + residual(32) + fc == 41_514
    assert spec.count_params(spec.resolve("residual_mnist")) == (41_514, 0)


def test_liu_s_nets_keep_liu_s_names_and_shapes():
    p = spec.resolve("inception_mnist")
    keys = list(canonical_shapes(p))
    assert keys[:4] == ["conv1.weight", "conv1.bias", "incep1.branch1x1.weight", "incep1.branch1x1.bias"]
    assert "incep1.branch3x3_3.weight" in keys and keys[-2:] == ["fc.weight", "fc.bias"]
    assert list(canonical_shapes(spec.resolve("residual_mnist")))[-2:] == ["l.weight", "l.bias"]
    shapes = spec.expected_shapes(p, 28)
    assert shapes["incep1"] == (1, 88, 12, 12) and shapes["flatten"] == (1, 1408)
    with pytest.raises(spec.SpecError, match=r"fc reads 88 x 4 x 4 flattened, so use --input-size 28"):
        spec.stage_shapes(p, 32)
