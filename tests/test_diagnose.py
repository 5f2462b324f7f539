"""verify's diagnosis names the mistake a user's GoogLeNet makes.

The user models here are written the way tutorials write them (plain ``nn.Module``
code: torchvision's GoogLeNet with BatchNorm, Hongpu Liu's Inception net for MNIST),
not built by the suite; their ``state_dict`` keys are the canonical names, as
torchvision's and Liu's are. Each is written with one mistake of the catalogue (or two),
holds the suite's seeded weights, and its logits go to ``diagnose``, which must name the
mistake; a correct model, and one with a mistake the catalogue does not hold, get [].
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.teach import stages
from conformance.teach.pitfalls import PITFALLS, where

from .conftest import backend_or_skip

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

diagnose_module = pytest.importorskip("conformance.verify.diagnose")
diagnose = diagnose_module.diagnose

# --------------------------------------------------------------------------------------
# A user's GoogLeNet with BatchNorm, written as torchvision writes it
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mistakes:
    eps: float = 0.001  # torchvision's; nn.BatchNorm2d's default is 1e-5
    relu: bool = True
    relu_added: bool = False  # Liu's net: a ReLU after each conv of the Inception block
    leaky: bool = False  # LeakyReLU(0.1): a mistake the catalogue does not hold
    ceil_mode: bool = True
    same: bool = False  # TensorFlow's "same" on conv1 and the 3x3/2 pools, padded by hand
    swap: bool = False  # torch.cat([b1, b3, b2, b4])
    softmax: bool = False
    dropout_on: bool = False
    transform_input: bool = True
    bgr: bool = False  # the input's channels reversed before anything else
    transposed: bool = False  # kernels loaded with their height and width swapped
    hwc: bool = False  # Liu's net: fc fed an (H, W, C) flatten
    exclude_pad: bool = False  # Liu's net: count_include_pad=False


def pad_same(x, kernel, stride, value=0.0):
    """TensorFlow's SAME, as ports from TensorFlow write it."""
    size = x.shape[-1]
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    pads = [total // 2, total - total // 2]
    return F.pad(x, pads + pads, value=value)


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, m: Mistakes, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=m.eps)
        self.m = m

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.m.leaky:
            return F.leaky_relu(x, 0.1)
        return F.relu(x) if self.m.relu else x


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, m: Mistakes):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, m, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, ch3x3red, m, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, m, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(  # torchvision's "5x5" branch is a 3x3 conv
            BasicConv2d(cin, ch5x5red, m, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, m, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool_proj, m, kernel_size=1)
        )
        self.m = m

    def forward(self, x):
        b1, b2, b3, b4 = self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)
        return torch.cat([b1, b3, b2, b4] if self.m.swap else [b1, b2, b3, b4], 1)


class UserGoogLeNet(nn.Module):
    def __init__(self, num_classes: int, m: Mistakes):
        super().__init__()
        self.m = m
        self.conv1 = BasicConv2d(3, 64, m, kernel_size=7, stride=2, padding=0 if m.same else 3)
        self.maxpool1 = self._pool(3, 2)
        self.conv2 = BasicConv2d(64, 64, m, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, m, kernel_size=3, padding=1)
        self.maxpool2 = self._pool(3, 2)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, m)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, m)
        self.maxpool3 = self._pool(3, 2)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, m)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, m)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, m)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, m)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, m)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=m.ceil_mode)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, m)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, m)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def _pool(self, kernel, stride):
        return nn.MaxPool2d(kernel, stride, ceil_mode=self.m.ceil_mode and not self.m.same)  # same: padded by hand

    def _transform_input(self, x):
        x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x_ch0, x_ch1, x_ch2), 1)

    def forward(self, x):
        if self.m.bgr:
            x = x.flip(1)
        if self.m.transform_input:
            x = self._transform_input(x)
        x = self.conv1(pad_same(x, 7, 2) if self.m.same else x)
        x = self.maxpool1(pad_same(x, 3, 2, -float("inf")) if self.m.same else x)
        x = self.conv3(self.conv2(x))
        x = self.maxpool2(pad_same(x, 3, 2, -float("inf")) if self.m.same else x)
        x = self.inception3b(self.inception3a(x))
        x = self.maxpool3(pad_same(x, 3, 2, -float("inf")) if self.m.same else x)
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        x = self.maxpool4(x)
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        x = F.dropout(x, 0.2) if self.m.dropout_on else self.dropout(x)
        x = self.fc(x)
        return F.softmax(x, dim=1) if self.m.softmax else x


# --------------------------------------------------------------------------------------
# Hongpu Liu's Inception net for MNIST, as his lecture writes it
# --------------------------------------------------------------------------------------


class InceptionA(nn.Module):
    def __init__(self, in_channels, m: Mistakes):
        super().__init__()
        self.m = m
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def act(self, x):
        return F.relu(x) if self.m.relu_added else x

    def forward(self, x):
        branch1x1 = self.act(self.branch1x1(x))
        branch5x5 = self.act(self.branch5x5_2(self.act(self.branch5x5_1(x))))
        branch3x3 = self.act(self.branch3x3_1(x))
        branch3x3 = self.act(self.branch3x3_3(self.act(self.branch3x3_2(branch3x3))))
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=not self.m.exclude_pad)
        branch_pool = self.act(self.branch_pool(branch_pool))
        outputs = (
            [branch1x1, branch3x3, branch5x5, branch_pool]
            if self.m.swap
            else [
                branch1x1,
                branch5x5,
                branch3x3,
                branch_pool,
            ]
        )
        return torch.cat(outputs, dim=1)


class LiuNet(nn.Module):
    def __init__(self, m: Mistakes):
        super().__init__()
        self.m = m
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(88, 20, kernel_size=5)
        self.incep1 = InceptionA(10, m)
        self.incep2 = InceptionA(20, m)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(1408, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incep1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incep2(x)
        x = x.permute(0, 2, 3, 1).reshape(in_size, -1) if self.m.hwc else x.view(in_size, -1)
        x = self.fc(x)
        return F.softmax(x, dim=1) if self.m.softmax else x


# --------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------

BN_CLASSES, BN_SIZES, LIU_SIZES = 10, (64, 57), (28, 28)


@pytest.fixture(scope="session")
def bn_case():
    plan = spec.resolve("googlenet_bn", num_classes=BN_CLASSES, transform_input=True)
    params = canonical.random_params(plan, 0)
    inputs = [
        stages.seeded_input(plan, size, n, seed) for seed, (size, n) in enumerate(zip(BN_SIZES, (2, 1), strict=True))
    ]
    return plan, params, inputs


@pytest.fixture(scope="session")
def liu_case():
    plan = spec.resolve("inception_mnist")
    params = canonical.random_params(plan, 0)
    inputs = [stages.seeded_input(plan, size, 2, seed) for seed, size in enumerate(LIU_SIZES)]
    return plan, params, inputs


def loaded(model, params, transposed=False):
    """The canonical weights in the user's model; ``transposed``: through a port script
    that swaps every kernel's height and width."""
    state = {}
    for key, value in params.items():
        if transposed and value.ndim == 4 and value.shape[-1] > 1:
            value = value.transpose(0, 1, 3, 2)
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return model.eval()


def logits_of(model, inputs):
    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy() for x in inputs]


def run_bn(case, m: Mistakes):
    plan, params, inputs = case
    model = loaded(UserGoogLeNet(BN_CLASSES, m), params, m.transposed)
    return diagnose(plan, params, inputs, logits_of(model, inputs))


def run_liu(case, m: Mistakes):
    plan, params, inputs = case
    model = loaded(LiuNet(m), params, m.transposed)
    return diagnose(plan, params, inputs, logits_of(model, inputs))


BN_MISTAKES = {
    "same-padding": Mistakes(same=True),
    "floor-pooling": Mistakes(ceil_mode=False),
    "kernel-transposed": Mistakes(transposed=True),
    "bn-eps-gluon": Mistakes(eps=1e-5),  # nn.BatchNorm2d's default, which is Gluon's
    "transform-input": Mistakes(transform_input=False),
    "rgb-bgr": Mistakes(bgr=True),
    "relu-missing": Mistakes(relu=False),
    "branch-order": Mistakes(swap=True),
    "softmax-output": Mistakes(softmax=True),
}
LIU_MISTAKES = {
    "kernel-transposed": Mistakes(transposed=True),
    "dense-rows": Mistakes(hwc=True),
    "relu-added": Mistakes(relu_added=True),
    "branch-order": Mistakes(swap=True),
    "softmax-output": Mistakes(softmax=True),
    "count-include-pad": Mistakes(exclude_pad=True),
}


def test_a_correct_user_model_agrees_and_gets_no_diagnosis(bn_case, liu_case):
    assert run_bn(bn_case, Mistakes()) == []
    assert run_liu(liu_case, Mistakes()) == []


@pytest.mark.parametrize("name", list(BN_MISTAKES))
def test_each_mistake_in_a_torchvision_style_model_is_diagnosed_by_name(bn_case, name):
    found = run_bn(bn_case, BN_MISTAKES[name])
    assert found, f"{name}: not diagnosed"
    best = found[0]
    assert best.pitfalls == (name,), [f.pitfalls for f in found]
    assert best.max_rel <= 1e-4
    plan = bn_case[0]
    assert best.where == (where(PITFALLS[name], plan, BN_SIZES[0])[0],)


@pytest.mark.parametrize("name", list(LIU_MISTAKES))
def test_each_mistake_in_liu_s_net_is_diagnosed_by_name(liu_case, name):
    found = run_liu(liu_case, LIU_MISTAKES[name])
    assert found and found[0].pitfalls == (name,), [f.pitfalls for f in found]
    assert found[0].max_rel <= 1e-4


def test_two_mistakes_are_diagnosed_as_the_pair(bn_case, liu_case):
    found = run_bn(bn_case, Mistakes(eps=1e-5, ceil_mode=False))
    assert [f.pitfalls for f in found] == [("floor-pooling", "bn-eps-gluon")]
    assert found[0].where == ("maxpool1", "conv1") and found[0].max_rel <= 1e-4
    found = run_liu(liu_case, Mistakes(hwc=True, exclude_pad=True))
    assert [f.pitfalls for f in found] == [("dense-rows", "count-include-pad")]


def test_a_mistake_outside_the_catalogue_gets_no_diagnosis(bn_case):
    assert run_bn(bn_case, Mistakes(leaky=True)) == []


def test_dropout_left_on_is_not_mistaken_for_another_mistake(bn_case):
    """Random masks: no replay reproduces them, and no other mistake is named instead."""
    assert PITFALLS["dropout-on"].replay is None
    assert run_bn(bn_case, Mistakes(dropout_on=True)) == []


def test_a_user_model_that_stays_correct_agrees_with_the_reference_bit_for_bit_nearly(bn_case):
    """The user's model is an honest witness: without a mistake it agrees with the
    suite's PyTorch model to float rounding (else the cases above would prove nothing)."""
    t = backend_or_skip("torch")
    _, params, inputs = bn_case
    ref = t.build("googlenet_bn", BN_CLASSES, transform_input=True)
    t.from_canonical(ref, params)
    user = loaded(UserGoogLeNet(BN_CLASSES, Mistakes()), params)
    for x, got in zip(inputs, logits_of(user, inputs), strict=True):
        want = t.forward(ref, x)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


# --------------------------------------------------------------------------------------
# The catalogue's own ports: each framework's broken port is diagnosed by its name
# --------------------------------------------------------------------------------------

PORTS = [  # (pitfall, variant, size): the mistake made in its framework, as pitfalls shows it
    ("same-padding", "googlenet_bn", 64),
    ("floor-pooling", "googlenet_bn", 64),
    ("kernel-transposed", "googlenet_cifar", 32),
    ("dense-rows", "inception_mnist", 28),
    ("bn-eps-gluon", "googlenet_bn", 64),
    ("bn-eps-keras", "googlenet_cifar", 32),
    ("lrn-alpha", "googlenet_lrn", 223),
    ("transform-input", "googlenet_bn", 64),
    ("rgb-bgr", "googlenet_lrn", 223),
    ("slim-5x5", "googlenet_slim", 200),
    ("symmetric-padding", "googlenet_slim", 224),  # 200 is too small for it (symmetric: 209 and up)
    ("relu-missing", "googlenet_d2l", 64),
    ("relu-added", "inception_mnist", 28),
    ("branch-order", "googlenet_d2l", 64),
    ("softmax-output", "googlenet_cifar", 32),
    ("count-include-pad", "inception_mnist", 28),
]


# Inference mistakes without a replay, each for its reason: dropout left on is random; a
# zero-padded max pool changes no output of these networks (each padded max pool reads a
# ReLU's); Flax's wrong kernel permutation is refused when any GoogLeNet loads; Flax's
# avg pool without its padding makes count-include-pad's outputs, which that replay names.
WITHOUT_REPLAY = {"dropout-on", "zero-padded-max-pool", "flax-kernel-io", "flax-avg-pool"}


def test_every_inference_mistake_has_a_replay_and_a_port_here():
    inference = {n for n, p in PITFALLS.items() if p.kind == "inference"}
    assert {n for n in inference if PITFALLS[n].replay is None} == WITHOUT_REPLAY
    assert {n for n, _, _ in PORTS} == inference - WITHOUT_REPLAY


@pytest.mark.parametrize(("name", "variant", "size"), PORTS, ids=[p[0] for p in PORTS])
def test_the_replay_reproduces_the_framework_s_broken_port(name, variant, size):
    """The replay (made in the reference) and ``broken`` (made in the framework whose
    port makes it) are one mistake: diagnose names the broken port's mistake."""
    pitfall = PITFALLS[name]
    b = backend_or_skip(pitfall.framework)
    options = {"transform_input": True} if spec.VARIANTS[variant].input.transform else {}
    plan = spec.resolve(variant, **options)
    params = canonical.random_params(plan, 0)
    x = stages.seeded_input(plan, size, 1, 0)
    with pitfall.broken(b) as broken:
        model = broken.build(variant, **options)
        broken.from_canonical(model, params)
        got = broken.forward(model, x)
    found = diagnose(plan, params, [x], [got])
    assert found and found[0].pitfalls == (name,), [f.pitfalls for f in found]


def test_inputs_and_logits_that_do_not_match_are_refused(liu_case):
    plan, params, inputs = liu_case
    with pytest.raises(ValueError, match="got: expected logits for each image"):
        diagnose(plan, params, inputs, [np.zeros((2, 10), np.float32)])
    with pytest.raises(ValueError, match="inputs: expected one or more non-empty NCHW batches"):
        diagnose(plan, params, [], [])
