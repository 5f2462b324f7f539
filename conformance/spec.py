"""The one description of every GoogLeNet variant, as data.

Two levels:

* The *table*: a :class:`Variant` lists its layers in order, one row each, as in
  the paper's Table 1 (``Conv``, ``Pool``, ``Inception`` rows; ``LRN`` for Caffe's
  network; ``InceptionA``, ``Residual`` and ``ReLU`` for the lecture's small nets),
  plus the settings that apply everywhere (normalization, conv bias, branch 3, aux
  heads, dropout, head).
* The *plan*: :func:`plan` resolves a variant into named units with their input
  channels filled in (``ConvUnit``, ``Dense``, ...). Unit names are the canonical
  checkpoint prefixes (torchvision's state_dict names), so every framework builds
  the same tree with the same names, and the checkpoint keys follow from the plan.

Everything here is plain Python: shapes, parameter counts and multiply-adds are
computed without importing any framework. The shape comments in the tables are
for a 224 x 224 input; ``python -m conformance spec`` prints them for any size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Literal, Union

# --------------------------------------------------------------------------------------
# Table rows
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """A conv unit: convolution, then BatchNorm (if the variant has it), then ReLU."""

    name: str
    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool | None = None  # None: the variant's conv_bias
    relu: bool = True


@dataclass(frozen=True)
class Pool:
    """A max or average pool with PyTorch semantics (padding, ceil rounding)."""

    name: str
    kind: Literal["max", "avg"]
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False
    # Average pools only: do zero-padded cells count in the mean (PyTorch's default)?
    count_include_pad: bool = True


@dataclass(frozen=True)
class AdaptiveAvgPool:
    """Average pool to a fixed ``size`` x ``size`` map, PyTorch's window rule."""

    name: str
    size: int


@dataclass(frozen=True)
class Inception:
    """One row of the paper's Table 1."""

    name: str
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @property
    def out(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


@dataclass(frozen=True)
class LRN:
    """Local response normalisation across channels, with Caffe's and PyTorch's meaning:
    ``b = a / (k + alpha / size * sum(a**2 over size neighbouring channels)) ** beta``.
    MXNet states it the same way; TensorFlow's takes ``alpha / size`` and a radius."""

    name: str
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True)
class ReLU:
    """A ReLU on its own, where a post applies it after a pool (``relu(mp(conv(x)))``)."""

    name: str


@dataclass(frozen=True)
class InceptionA:
    """The lecture's Inception block (seed 001): plain convs without ReLU, branches
    1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, named as the post names them."""

    name: str
    ch1x1: int = 16
    ch5x5red: int = 16
    ch5x5: int = 24
    ch3x3red: int = 16
    ch3x3: int = 24
    pool_proj: int = 24

    @property
    def out(self) -> int:
        return self.ch1x1 + self.ch5x5 + self.ch3x3 + self.pool_proj  # 16 + 24 + 24 + 24 = 88


@dataclass(frozen=True)
class Residual:
    """The lecture's residual block (seed 001): ``relu(x + conv2(relu(conv1(x))))``,
    two 3x3 convs that keep the channels."""

    name: str


Row = Union[Conv, Pool, Inception, LRN, ReLU, InceptionA, Residual]


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm after every conv (the conv then has no bias).

    ``momentum`` uses PyTorch's convention (weight of the new batch statistic);
    Keras and Gluon take ``1 - momentum``.
    """

    eps: float
    momentum: float = 0.1


@dataclass(frozen=True)
class AuxHead:
    """Auxiliary classifier: pool -> 1x1 conv -> flatten -> fc -> ReLU -> dropout -> fc."""

    pool: Union[Pool, AdaptiveAvgPool]
    conv: int = 128
    fc: int = 1024
    dropout: float = 0.7
    # The spatial size the pool must produce: fc1 has conv * pooled**2 inputs.
    pooled: int = 4
    taps: tuple[str, ...] = ("inception4a", "inception4d")  # feed aux1, aux2, ...


@dataclass(frozen=True)
class InputTransform:
    """torchvision's ``transform_input``: re-maps ImageNet mean/std-normalised input
    to the (x - 0.5) / 0.5 normalisation the ported Inception weights expect."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def scale(self) -> tuple[float, ...]:
        return tuple(s / 0.5 for s in self.std)

    @property
    def shift(self) -> tuple[float, ...]:
        return tuple((m - 0.5) / 0.5 for m in self.mean)


@dataclass(frozen=True)
class Variant:
    """A complete GoogLeNet variant. The last three fields are build options."""

    name: str
    description: str
    rows: tuple[Row, ...]
    branch3_kernel: int
    branch_pool: Pool  # the pool opening branch 4 of every Inception block
    norm: BatchNorm | None
    aux: AuxHead | None
    dropout: float
    # The pool before fc; fc reads its output flattened, so it must give 1 x 1. None:
    # fc reads the last map flattened (the lecture nets), so the input size is fixed.
    head_pool: Union[Pool, AdaptiveAvgPool, None] = AdaptiveAvgPool("avgpool", 1)
    branch3_depth: int = 1  # stacked branch3_kernel convs after branch 3's 1x1
    conv_bias: bool | None = None  # None: a bias exactly when there is no BatchNorm
    # pytorch-cifar100 writes ``nn.BatchNorm2d(n5x5, n5x5)``: the second argument is eps,
    # so branch 3's first stacked conv normalises with eps = its channel count.
    branch3_eps_is_channels: bool = False
    plain_convs: bool = False  # bare convs named ``<name>.weight``, as the lecture's nets
    fc_name: str = "fc"
    in_channels: int = 3
    input_size: int = 224  # the size the variant was designed for; any admissible size runs
    input_transform: InputTransform | None = None
    # Build options (see configure()).
    num_classes: int = 1000
    aux_logits: bool = False
    transform_input: bool = False

    @property
    def options(self) -> dict[str, object]:
        return {"num_classes": self.num_classes, "aux_logits": self.aux_logits,
                "transform_input": self.transform_input}


# --------------------------------------------------------------------------------------
# The variants
# --------------------------------------------------------------------------------------

# fmt: off
_TABLE1 = (                  # 1x1 3x3red 3x3 5x5red 5x5 pool   out   @224
    Inception("inception3a",  64,  96, 128, 16,  32,  32),      # N x  256 x 28 x 28
    Inception("inception3b", 128, 128, 192, 32,  96,  64),      # N x  480 x 28 x 28
    Inception("inception4a", 192,  96, 208, 16,  48,  64),      # N x  512 x 14 x 14
    Inception("inception4b", 160, 112, 224, 24,  64,  64),      # N x  512 x 14 x 14
    Inception("inception4c", 128, 128, 256, 24,  64,  64),      # N x  512 x 14 x 14
    Inception("inception4d", 112, 144, 288, 32,  64,  64),      # N x  528 x 14 x 14
    Inception("inception4e", 256, 160, 320, 32, 128, 128),      # N x  832 x 14 x 14
    Inception("inception5a", 256, 160, 320, 32, 128, 128),      # N x  832 x  7 x  7
    Inception("inception5b", 384, 192, 384, 48, 128, 128),      # N x 1024 x  7 x  7
)
_3a, _3b, _4a, _4b, _4c, _4d, _4e, _5a, _5b = _TABLE1


def _max(name: str, kernel: int = 3, stride: int = 2) -> Pool:
    return Pool(name, "max", kernel, stride, ceil_mode=True)


GOOGLENET = Variant(
    name="googlenet",
    description="the paper network as the PyTorch post builds it: conv + bias + ReLU, 5x5 branch 3",
    rows=(                                                      # N x    3 x 224 x 224
        Conv("conv1", 64, 7, stride=2, padding=3),              # N x   64 x 112 x 112
        _max("maxpool1"),                                       # N x   64 x  56 x  56
        Conv("conv2", 64, 1),                                   # N x   64 x  56 x  56
        Conv("conv3", 192, 3, padding=1),                       # N x  192 x  56 x  56
        _max("maxpool2"),                                       # N x  192 x  28 x  28
        _3a, _3b,
        _max("maxpool3"),                                       # N x  480 x  14 x  14
        _4a, _4b, _4c, _4d, _4e,
        _max("maxpool4"),                                       # N x  832 x   7 x   7
        _5a, _5b,
    ),
    branch3_kernel=5,
    branch_pool=Pool("branch_pool", "max", 3, 1, padding=1, ceil_mode=True),
    norm=None,
    aux=AuxHead(pool=Pool("pool", "avg", 5, 3)),                # 14 x 14 -> 4 x 4
    dropout=0.4,
)

GOOGLENET_BN = dataclasses.replace(
    GOOGLENET,
    name="googlenet_bn",
    description="torchvision's googlenet: conv (no bias) + BatchNorm(eps 1e-3) + ReLU, "
                "3x3 branch 3, 2x2 pool before 5a, adaptive aux pool",
    rows=tuple(_max("maxpool4", kernel=2) if r.name == "maxpool4" else r for r in GOOGLENET.rows),
    branch3_kernel=3,  # torchvision's known bug (pytorch/vision#906), kept for its weights
    norm=BatchNorm(eps=1e-3),
    aux=AuxHead(pool=AdaptiveAvgPool("pool", 4)),
    dropout=0.2,
    input_transform=InputTransform(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)

GOOGLENET_GLUONCV = dataclasses.replace(
    GOOGLENET_BN,
    name="googlenet_gluoncv",
    description="GluonCV's googlenet: torchvision's layers and weights, but a 2x2 pool before "
                "5a without ceil, avg 5x5/3 aux pools and a fixed 7x7 head pool",
    rows=tuple(Pool("maxpool4", "max", 2, 2) if r.name == "maxpool4" else r for r in GOOGLENET.rows),
    aux=GOOGLENET.aux,
    dropout=0.4,
    head_pool=Pool("avgpool", "avg", 7, 7),  # = global at 224; needs a 7..13 map
    input_transform=None,
)

GOOGLENET_LRN = dataclasses.replace(
    GOOGLENET,
    name="googlenet_lrn",
    description="Caffe's bvlc_googlenet, as the paper draws it: the paper network with "
                "LocalResponseNorm(5, 1e-4, 0.75) after the first pool and after conv3",
    rows=tuple(r2 for r in GOOGLENET.rows for r2 in
               ((r, LRN("lrn1")) if r.name == "maxpool1" else (r, LRN("lrn2")) if r.name == "conv3" else (r,))),
)


def _d2l_pool(name: str) -> Pool:
    return Pool(name, "max", 3, 2, padding=1)  # floor rounding, padded with -inf


GOOGLENET_D2L = dataclasses.replace(
    GOOGLENET,
    name="googlenet_d2l",
    description="d2l's GoogLeNet (seed 002): 1 x 96 x 96 Fashion-MNIST, 10 classes, 3x3/2 pools "
                "with padding 1 and floor rounding, ReLU after every conv, no aux heads, no dropout",
    rows=tuple(_d2l_pool(r.name) if isinstance(r, Pool) else r for r in GOOGLENET.rows),
    aux=None,
    dropout=0.0,
    in_channels=1,
    input_size=96,
    num_classes=10,
)

GOOGLENET_CIFAR = dataclasses.replace(
    GOOGLENET_D2L,
    name="googlenet_cifar",
    description="pytorch-cifar100's GoogLeNet (seed 004): 3 x 32 x 32, 100 classes, a stem of three "
                "3x3 convs, BatchNorm after conv + bias, two stacked 3x3 convs in branch 3",
    rows=(                                                      # N x    3 x 32 x 32
        Conv("conv1", 64, 3, padding=1, bias=False),            # N x   64 x 32 x 32
        Conv("conv2", 64, 3, padding=1, bias=False),            # N x   64 x 32 x 32
        Conv("conv3", 192, 3, padding=1, bias=False),           # N x  192 x 32 x 32
        _d2l_pool("maxpool2"),                                  # N x  192 x 16 x 16
        _3a, _3b,                                               # N x  480 x 16 x 16
        _d2l_pool("maxpool3"),                                  # N x  480 x  8 x  8
        _4a, _4b, _4c, _4d, _4e,                                # N x  832 x  8 x  8
        _d2l_pool("maxpool4"),                                  # N x  832 x  4 x  4
        _5a, _5b,                                               # N x 1024 x  4 x  4
    ),
    branch3_kernel=3,
    branch3_depth=2,
    branch_pool=Pool("branch_pool", "max", 3, 1, padding=1),
    norm=BatchNorm(eps=1e-5),
    conv_bias=True,  # the Inception blocks' convs keep their bias before BatchNorm
    branch3_eps_is_channels=True,
    dropout=0.4,  # Dropout2d on an N x 1024 x 1 x 1 map: the same as Dropout
    in_channels=3,
    input_size=32,
    num_classes=100,
)

INCEPTION_MNIST = dataclasses.replace(
    GOOGLENET,
    name="inception_mnist",
    description="the lecture's Inception net (seed 001): 1 x 28 x 28 MNIST, two InceptionA blocks, "
                "conv -> 2x2 max pool -> ReLU, fc on the flattened map; names as the post's",
    rows=(                                                      # N x  1 x 28 x 28
        Conv("conv1", 10, 5, relu=False),                       # N x 10 x 24 x 24
        Pool("mp1", "max", 2, 2),                               # N x 10 x 12 x 12
        ReLU("relu1"),
        InceptionA("incep1"),                                   # N x 88 x 12 x 12
        Conv("conv2", 20, 5, relu=False),                       # N x 20 x  8 x  8
        Pool("mp2", "max", 2, 2),                               # N x 20 x  4 x  4
        ReLU("relu2"),
        InceptionA("incep2"),                                   # N x 88 x  4 x  4 -> fc 1408
    ),
    branch_pool=Pool("pool", "avg", 3, 1, padding=1),  # F.avg_pool2d: zero padding counts
    norm=None,
    aux=None,
    dropout=0.0,
    head_pool=None,
    plain_convs=True,
    in_channels=1,
    input_size=28,
    num_classes=10,
)

RESIDUAL_MNIST = dataclasses.replace(
    INCEPTION_MNIST,
    name="residual_mnist",
    description="the lecture's residual net (seed 001): 1 x 28 x 28 MNIST, two residual blocks "
                "relu(x + conv(relu(conv(x)))), fc on the flattened map; names as the post's",
    rows=(                                                      # N x  1 x 28 x 28
        Conv("c1", 16, 5, relu=False),                          # N x 16 x 24 x 24
        Pool("mp1", "max", 2, 2),                               # N x 16 x 12 x 12
        ReLU("relu1"),
        Residual("rblock1"),                                    # N x 16 x 12 x 12
        Conv("c2", 32, 5, relu=False),                          # N x 32 x  8 x  8
        Pool("mp2", "max", 2, 2),                               # N x 32 x  4 x  4
        ReLU("relu2"),
        Residual("rblock2"),                                    # N x 32 x  4 x  4 -> l 512
    ),
    fc_name="l",
)
# fmt: on

VARIANTS: dict[str, Variant] = {v.name: v for v in (GOOGLENET, GOOGLENET_BN, GOOGLENET_GLUONCV, GOOGLENET_LRN,
                                                     GOOGLENET_D2L, GOOGLENET_CIFAR, INCEPTION_MNIST,
                                                     RESIDUAL_MNIST)}


class SpecError(ValueError):
    """A variant name, option or input size that the spec cannot honour."""


def configure(variant: str | Variant, num_classes: int | None = None, aux_logits: bool = False,
              **options: object) -> Variant:
    """The variant with its build options set and checked.

    ``num_classes``: None keeps the variant's own (1000; 10 for ``googlenet_d2l``).
    ``options``: ``transform_input`` (only for variants that define an input transform).
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise SpecError(f"variant: unknown {variant!r}; expected one of {sorted(VARIANTS)}")
        variant = VARIANTS[variant]
    unknown = set(options) - {"transform_input"}
    if unknown:
        raise SpecError(f"option {sorted(unknown)[0]!r} is not known; expected: transform_input")
    if num_classes is None:
        num_classes = variant.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SpecError(f"num_classes: expected a positive integer, got {num_classes!r}")
    transform_input = bool(options.get("transform_input", False))
    if transform_input and variant.input_transform is None:
        raise SpecError(f"transform_input: variant {variant.name!r} defines no input transform")
    if aux_logits and variant.aux is None:
        raise SpecError(f"aux_logits: variant {variant.name!r} has no aux heads")
    return dataclasses.replace(variant, num_classes=num_classes, aux_logits=bool(aux_logits),
                               transform_input=transform_input)


# --------------------------------------------------------------------------------------
# The plan: named units with input channels resolved
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvUnit:
    """Conv (+ BatchNorm) (+ ReLU); ``name`` is the canonical prefix, e.g.
    ``inception3a.branch2.1`` owns ``inception3a.branch2.1.conv.weight``. A ``plain``
    unit is a bare conv, as the lecture nets write it: ``incep1.branch1x1.weight``."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    norm: BatchNorm | None
    bias: bool
    relu: bool = True
    plain: bool = False

    def __post_init__(self) -> None:
        if self.plain and self.norm is not None:
            raise SpecError(f"{self.name}: a plain conv has no BatchNorm")


@dataclass(frozen=True)
class Dense:
    """Fully connected layer. ``flattened_from`` is the (C, H, W) map it reads after a
    flatten, in PyTorch's (C, H, W) order; None when it reads a plain vector."""

    name: str
    in_features: int
    out_features: int
    flattened_from: tuple[int, int, int] | None = None


PoolUnit = Union[Pool, AdaptiveAvgPool]
Op = Union[ConvUnit, PoolUnit]


@dataclass(frozen=True)
class InceptionBlock:
    """Four parallel branches, concatenated on channels. A branch with a single op
    is that op (``branch1.conv``); a longer one is a sequence (``branch2.0.conv``)."""

    name: str
    in_channels: int
    branches: tuple[tuple[Op, ...], ...]
    # Ops are the block's own attributes, named as the lecture's InceptionA names them
    # (``incep1.branch5x5_1``), rather than torchvision's numbered branches.
    flat: bool = False

    @property
    def out_channels(self) -> int:
        return sum(_chain_out(b, self.in_channels) for b in self.branches)


@dataclass(frozen=True)
class ResidualUnit:
    """``relu(x + conv2(conv1(x)))``; conv1 has its ReLU, conv2 none."""

    name: str
    conv1: ConvUnit
    conv2: ConvUnit

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels


Stage = Union[ConvUnit, PoolUnit, InceptionBlock, LRN, ReLU, ResidualUnit]


@dataclass(frozen=True)
class AuxUnit:
    name: str  # aux1, aux2
    tap: str  # the stage whose output it reads
    pool: PoolUnit
    conv: ConvUnit
    fc1: Dense
    fc2: Dense
    dropout: float
    pooled: int


@dataclass(frozen=True)
class Plan:
    variant: Variant
    stages: tuple[Stage, ...]
    aux: tuple[AuxUnit, ...]
    fc: Dense
    dropout: float
    head_pool: PoolUnit | None  # None: fc reads the last map flattened
    transform: InputTransform | None = None

    @property
    def in_channels(self) -> int:
        return self.variant.in_channels

    @property
    def num_classes(self) -> int:
        return self.variant.num_classes

    def aux_for(self, stage: str) -> tuple[AuxUnit, ...]:
        return tuple(a for a in self.aux if a.tap == stage)

    def units(self) -> Iterator[Union[ConvUnit, Dense]]:
        """Every parametrised unit in canonical (torchvision state_dict) order: the
        trunk's conv units, then each aux head's conv, fc1, fc2, then fc."""
        for stage in self.stages:
            if isinstance(stage, ConvUnit):
                yield stage
            elif isinstance(stage, InceptionBlock):
                for branch in stage.branches:
                    yield from (op for op in branch if isinstance(op, ConvUnit))
            elif isinstance(stage, ResidualUnit):
                yield from (stage.conv1, stage.conv2)
        for head in self.aux:
            yield from (head.conv, head.fc1, head.fc2)
        yield self.fc

    def conv_units(self) -> Iterator[ConvUnit]:
        return (u for u in self.units() if isinstance(u, ConvUnit))


def _chain_out(ops: tuple[Op, ...], in_channels: int) -> int:
    for op in ops:
        if isinstance(op, ConvUnit):
            in_channels = op.out_channels
    return in_channels


def _unit(v: Variant, name: str, cin: int, cout: int, kernel: int, stride: int = 1, padding: int | None = None,
          bias: bool | None = None, relu: bool = True, eps: float | None = None) -> ConvUnit:
    """A conv unit with the variant's settings: its norm, bias rule and conv style;
    ``padding`` None keeps the size (kernel // 2); ``eps`` overrides the norm's."""
    norm = v.norm if eps is None or v.norm is None else dataclasses.replace(v.norm, eps=eps)
    if bias is None:
        bias = v.conv_bias if v.conv_bias is not None else norm is None
    padding = kernel // 2 if padding is None else padding
    return ConvUnit(name, cin, cout, kernel, stride, padding, norm, bias, relu, v.plain_convs)


def _inception(row: Inception, cin: int, v: Variant) -> InceptionBlock:
    n, k = row.name, v.branch3_kernel
    # branch 3: 1x1, then branch3_depth stacked k x k convs (two 3x3 in pytorch-cifar100)
    outs = (row.ch5x5red,) + (row.ch5x5,) * v.branch3_depth
    branch3 = [_unit(v, f"{n}.branch3.0", cin, row.ch5x5red, 1)]
    for i in range(1, len(outs)):
        eps = float(outs[i]) if v.branch3_eps_is_channels and i == 1 else None
        branch3.append(_unit(v, f"{n}.branch3.{i}", outs[i - 1], outs[i], k, eps=eps))
    return InceptionBlock(n, cin, (
        (_unit(v, f"{n}.branch1", cin, row.ch1x1, 1),),
        (_unit(v, f"{n}.branch2.0", cin, row.ch3x3red, 1), _unit(v, f"{n}.branch2.1", row.ch3x3red, row.ch3x3, 3)),
        tuple(branch3),
        (dataclasses.replace(v.branch_pool, name=f"{n}.branch4.0"), _unit(v, f"{n}.branch4.1", cin, row.pool_proj, 1)),
    ))


def _inception_a(row: InceptionA, cin: int, v: Variant) -> InceptionBlock:
    n = row.name

    def conv(local: str, c_in: int, c_out: int, kernel: int) -> ConvUnit:
        return _unit(v, f"{n}.{local}", c_in, c_out, kernel, relu=False)

    return InceptionBlock(n, cin, (
        (conv("branch1x1", cin, row.ch1x1, 1),),
        (conv("branch5x5_1", cin, row.ch5x5red, 1), conv("branch5x5_2", row.ch5x5red, row.ch5x5, 5)),
        (conv("branch3x3_1", cin, row.ch3x3red, 1), conv("branch3x3_2", row.ch3x3red, row.ch3x3, 3),
         conv("branch3x3_3", row.ch3x3, row.ch3x3, 3)),
        (dataclasses.replace(v.branch_pool, name=f"{n}.pool"), conv("branch_pool", cin, row.pool_proj, 1)),
    ), flat=True)


def _stage(row: Row, c: int, v: Variant) -> Stage:
    if isinstance(row, Conv):
        return _unit(v, row.name, c, row.out, row.kernel, row.stride, row.padding, row.bias, row.relu)
    if isinstance(row, Inception):
        block = _inception(row, c, v)
        if block.out_channels != row.out:  # the table and the branches must agree
            raise SpecError(f"{row.name}: branches give {block.out_channels} channels, the row says {row.out}")
        return block
    if isinstance(row, InceptionA):
        return _inception_a(row, c, v)
    if isinstance(row, Residual):
        return ResidualUnit(row.name, _unit(v, f"{row.name}.conv1", c, c, 3),
                             _unit(v, f"{row.name}.conv2", c, c, 3, relu=False))
    return row


def _stage_out(stage: Stage, c: int) -> int:
    return getattr(stage, "out_channels", c)


def plan(variant: Variant) -> Plan:
    """Resolve a configured variant into named units (see :func:`configure`)."""
    stages: list[Stage] = []
    channels: dict[str, int] = {}
    c = variant.in_channels
    for row in variant.rows:
        stage = _stage(row, c, variant)
        c = _stage_out(stage, c)
        stages.append(stage)
        channels[row.name] = c
    aux: list[AuxUnit] = []
    if variant.aux_logits and variant.aux is not None:
        head = variant.aux
        for i, tap in enumerate(head.taps, start=1):
            name = f"aux{i}"
            conv = _unit(variant, f"{name}.conv", channels[tap], head.conv, 1)
            flat = (head.conv, head.pooled, head.pooled)
            aux.append(AuxUnit(
                name, tap, dataclasses.replace(head.pool, name=f"{name}.pool"), conv,
                Dense(f"{name}.fc1", math.prod(flat), head.fc, flattened_from=flat),
                Dense(f"{name}.fc2", head.fc, variant.num_classes),
                head.dropout, head.pooled,
            ))
    if variant.head_pool is None:  # fc reads the whole last map, at the variant's own size
        last = _trace(stages, (variant.in_channels, variant.input_size, variant.input_size))
        fc = Dense(variant.fc_name, math.prod(last), variant.num_classes, flattened_from=last)
    else:
        fc = Dense(variant.fc_name, c, variant.num_classes)
    transform = variant.input_transform if variant.transform_input else None
    return Plan(variant, tuple(stages), tuple(aux), fc, variant.dropout, variant.head_pool, transform)


# --------------------------------------------------------------------------------------
# Arithmetic: output sizes, shapes, parameter counts, multiply-adds
# --------------------------------------------------------------------------------------


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size (``ceil_mode`` drops a last window that would
    start in the right padding)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


HW = tuple[int, int]
CHW = tuple[int, int, int]


def _op_chw(op: Stage, chw: CHW) -> CHW:
    c, h, w = chw
    if isinstance(op, ConvUnit):
        return (op.out_channels, conv_out(h, op.kernel, op.stride, op.padding),
                conv_out(w, op.kernel, op.stride, op.padding))
    if isinstance(op, Pool):
        return (c, pool_out(h, op.kernel, op.stride, op.padding, op.ceil_mode),
                pool_out(w, op.kernel, op.stride, op.padding, op.ceil_mode))
    if isinstance(op, AdaptiveAvgPool):
        return (c, op.size, op.size)
    if isinstance(op, (LRN, ReLU)):
        return chw
    return (op.out_channels, h, w)  # Inception and residual blocks keep the spatial size


def _window_fits(op: Stage, chw: CHW) -> bool:
    """Whether a pool's window fits its padded input. PyTorch runs a ceil-mode window
    larger than the input; MXNet refuses, so the spec admits neither."""
    if not isinstance(op, Pool):
        return True
    return all(op.kernel <= s + 2 * op.padding for s in chw[1:])


def _size(size: int | HW) -> HW:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in hw):
        raise SpecError(f"input size: expected a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def _trace(stages: tuple[Stage, ...] | list[Stage], chw: CHW, out: dict[str, CHW] | None = None) -> CHW:
    """The (C, H, W) after the stages (each recorded in ``out``); SpecError if the input
    is too small for them."""
    size = f"{chw[1]} x {chw[2]}" if chw[1] != chw[2] else chw[1]
    for stage in stages:
        if not _window_fits(stage, chw):
            raise SpecError(f"input size {size}: the {stage.name} window ({stage.kernel} x {stage.kernel}) "
                            f"is larger than its {chw[1]} x {chw[2]} input; use a larger --input-size")
        chw = _op_chw(stage, chw)
        if min(chw[1:]) < 1:
            raise SpecError(f"input size {size}: nothing left after {stage.name} "
                            f"({chw[1]} x {chw[2]}); use a larger --input-size")
        if out is not None:
            out[stage.name] = chw
    return chw


def stage_shapes(p: Plan, size: int | HW) -> dict[str, CHW]:
    """(C, H, W) after every stage; SpecError if the input is too small for the network,
    or gives the map a flattening fc cannot read."""
    h, w = _size(size)
    out: dict[str, CHW] = {}
    chw = _trace(p.stages, (p.in_channels, h, w), out)
    if p.head_pool is None:
        if chw != p.fc.flattened_from:
            raise SpecError(f"input size {size}: the last map is {' x '.join(map(str, chw))}; {p.fc.name} reads "
                            f"{' x '.join(map(str, p.fc.flattened_from))} flattened, so use "
                            f"--input-size {p.variant.input_size}")
        return out
    pooled = _op_chw(p.head_pool, chw)
    if pooled[1:] != (1, 1) or not _window_fits(p.head_pool, chw):
        raise SpecError(f"input size {size}: the head pool turns the {chw[1]} x {chw[2]} map into "
                        f"{pooled[1]} x {pooled[2]}; fc expects 1 x 1")
    return out


def aux_admits(p: Plan, size: int | HW) -> bool:
    """Whether the aux heads can run at this input size: their pool must give the
    ``pooled x pooled`` map that fc1's weights expect (avg 5x5/3 needs a 14-16 map)."""
    if not p.aux:
        return False
    shapes = stage_shapes(p, size)
    return all(_window_fits(a.pool, shapes[a.tap]) and
               _op_chw(a.pool, shapes[a.tap])[1:] == (a.pooled, a.pooled) for a in p.aux)


def expected_shapes(p: Plan, size: int | HW, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Output shape of every stage (NCHW), then ``flatten`` (the features fc reads),
    ``logits`` and, where the size admits them, the aux logits."""
    shapes: dict[str, tuple[int, ...]] = {
        name: (batch, *chw) for name, chw in stage_shapes(p, size).items()}
    shapes["flatten"] = (batch, p.fc.in_features)
    shapes["logits"] = (batch, p.num_classes)
    if aux_admits(p, size):
        shapes.update({head.name: (batch, p.num_classes) for head in p.aux})
    return shapes


@dataclass(frozen=True)
class LayerCount:
    """One parametrised layer: canonical name, trainable parameters, BatchNorm
    statistics (running mean + variance) and multiply-adds at a given input size."""

    name: str
    params: int
    stats: int
    macs: int


def conv_params(u: ConvUnit) -> tuple[int, int]:
    """(trainable, statistics): kernel [+ bias] [+ BN scale/shift, and its statistics]."""
    kernel = u.out_channels * u.in_channels * u.kernel * u.kernel + (u.out_channels if u.bias else 0)
    if u.norm is None:
        return kernel, 0
    return kernel + 2 * u.out_channels, 2 * u.out_channels


def dense_params(d: Dense) -> tuple[int, int]:
    return d.in_features * d.out_features + d.out_features, 0


def layer_counts(p: Plan, size: int | HW = 224) -> list[LayerCount]:
    """Per conv unit and dense layer, in forward order. Pools, ReLU and BatchNorm's
    element-wise work are not counted as multiply-adds (the usual convention)."""
    shapes = stage_shapes(p, size)
    admitted = aux_admits(p, size)
    rows: list[LayerCount] = []

    def conv_row(u: ConvUnit, in_hw: HW) -> HW:
        h, w = (conv_out(s, u.kernel, u.stride, u.padding) for s in in_hw)
        params, stats = conv_params(u)
        macs = h * w * u.out_channels * u.in_channels * u.kernel * u.kernel
        rows.append(LayerCount(u.name, params, stats, macs))
        return h, w

    def dense_row(d: Dense, active: bool = True) -> None:
        macs = d.in_features * d.out_features if active else 0
        rows.append(LayerCount(d.name, *dense_params(d), macs))

    hw = _size(size)
    for stage in p.stages:
        if isinstance(stage, ConvUnit):
            conv_row(stage, hw)
        elif isinstance(stage, InceptionBlock):
            for branch in stage.branches:
                bhw = hw
                for op in branch:
                    bhw = conv_row(op, bhw) if isinstance(op, ConvUnit) else _op_chw(op, (0, *bhw))[1:]
        elif isinstance(stage, ResidualUnit):
            conv_row(stage.conv2, conv_row(stage.conv1, hw))
        hw = shapes[stage.name][1:]
        for head in p.aux_for(stage.name):
            pooled = (head.pooled, head.pooled)
            conv_row(head.conv, pooled)
            if not admitted:  # the aux heads do not run at this size
                rows[-1] = dataclasses.replace(rows[-1], macs=0)
            dense_row(head.fc1, admitted)
            dense_row(head.fc2, admitted)
    dense_row(p.fc)
    return rows


def count_params(p: Plan) -> tuple[int, int]:
    """(trainable parameters, BatchNorm statistics) of the whole plan."""
    counts = [conv_params(u) if isinstance(u, ConvUnit) else dense_params(u) for u in p.units()]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)
