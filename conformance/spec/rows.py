"""The vocabulary of the tables: one dataclass per kind of row, and the settings a
variant applies everywhere (how a conv unit is built, branch 3, the aux heads, the
head, the input). Plain data: nothing here knows about any framework."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Conv:
    """A conv unit: convolution [+ bias], then BatchNorm (if the variant has it), then ReLU.
    ``bias=False`` drops the bias even where the variant's convs carry one."""

    name: str
    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    relu: bool = True


@dataclass(frozen=True)
class Pool:
    """A max or average pool with PyTorch's semantics (symmetric padding, ceil rounding),
    which are Caffe's (``pooling_layer.cpp``): an average divides by the cells of its
    window that lie in the padded input, so a ceil-mode window clipped at the end divides
    by fewer."""

    name: str
    kind: Literal["max", "avg"]
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False
    # Average pools only: do zero-padded cells count in the mean (PyTorch's default)?
    count_include_pad: bool = True
    # TensorFlow's "SAME" instead of ``padding``: ceil(size / stride) outputs, padded with
    # (total // 2, the rest) so the extra cell goes after (asymmetric at stride 2), and
    # padded cells never win (``conformance.spec.same_pads``). Max pools only.
    same: bool = False

    def __post_init__(self) -> None:
        if self.same and (self.kind != "max" or self.padding or self.ceil_mode):
            raise ValueError(f"{self.name}: SAME padding is for max pools, without padding or ceil_mode")


@dataclass(frozen=True)
class AdaptiveAvgPool:
    """Average pool to a fixed ``size`` x ``size`` map, PyTorch's window rule."""

    name: str
    size: int


@dataclass(frozen=True)
class Inception:
    """One row of the paper's Table 1: the widths of the four branches."""

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
    """A ReLU on its own, where a network applies it after a pool (``relu(mp(conv(x)))``)."""

    name: str


@dataclass(frozen=True)
class InceptionA:
    """The Inception block of Hongpu Liu's lecture: plain convs without ReLU, branches
    1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, named as the lecture names
    them (``branch5x5_1``)."""

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
    """The residual block of Hongpu Liu's lecture: ``relu(x + conv2(relu(conv1(x))))``,
    two 3x3 convs that keep the channels."""

    name: str


Row = Conv | Pool | Inception | LRN | ReLU | InceptionA | Residual


@dataclass(frozen=True)
class BatchNormSettings:
    """BatchNorm after every conv. ``momentum`` uses PyTorch's convention (the weight of
    the new batch statistic); Keras and Gluon take ``1 - momentum``."""

    eps: float
    momentum: float = 0.1
    # False: no learned scale (gamma), only the shift (beta), as TF-slim's
    # ``batch_norm(scale=False)``; the checkpoint has no ``bn.weight``.
    scale: bool = True


@dataclass(frozen=True)
class ConvSettings:
    """How every conv unit is built. A conv has a bias when ``bias`` is set and its row
    does not drop it; ``plain`` convs are bare layers named ``<name>.weight`` (Liu's
    lecture), others torchvision's ``BasicConv2d`` with ``<name>.conv.weight``."""

    norm: BatchNormSettings | None = None
    bias: bool = True
    plain: bool = False
    # TensorFlow's "SAME" padding for every conv (rows' ``padding`` is then unused):
    # ceil(size / stride) outputs, the extra padded cell after (``conformance.spec.same_pads``).
    same: bool = False


@dataclass(frozen=True)
class Branch3:
    """Branch 3 of every Inception block: a 1x1 reduction, then ``depth`` stacked
    ``kernel`` x ``kernel`` convs. ``width_as_eps``: the BatchNorm epsilon of the first
    stacked conv is the branch's width instead of the variant's, as pytorch-cifar100's
    ``nn.BatchNorm2d(n5x5, n5x5)`` passes it (the second argument of ``BatchNorm2d`` is
    eps)."""

    kernel: int
    depth: int = 1
    width_as_eps: bool = False


@dataclass(frozen=True)
class InceptionAux:
    """Auxiliary classifier: pool -> 1x1 conv -> flatten -> fc -> ReLU -> dropout -> fc."""

    pool: Pool | AdaptiveAvgPool
    conv: int = 128
    fc: int = 1024
    dropout: float = 0.7
    # The spatial size the pool must produce: fc1 has conv * pooled**2 inputs.
    pooled: int = 4
    taps: tuple[str, ...] = ("inception4a", "inception4d")  # feed aux1, aux2, ...


@dataclass(frozen=True)
class Head:
    """What follows the last block: a pool to 1 x 1 (None: fc reads the whole last map
    flattened, so the input size is fixed), dropout, and the classifier ``fc``."""

    pool: Pool | AdaptiveAvgPool | None = AdaptiveAvgPool("avgpool", 1)
    dropout: float = 0.0
    classes: int = 1000  # the default; resolve(num_classes=...) changes it
    fc: str = "fc"  # the classifier's name in checkpoints


@dataclass(frozen=True)
class InputTransform:
    """What a model does to its input before conv1 (the ``transform_input`` option),
    channel by channel: ``y[:, c] = x[:, order[c]] * scale[c] + shift[c]``. It takes the
    ImageNet mean/std-normalised RGB input torchvision's models expect to what ported
    weights were trained on: torchvision's (x - 0.5) / 0.5, or Caffe's BGR in 0-255
    less its mean pixel (``conformance.spec.tables``)."""

    order: tuple[int, ...]  # the input channel each output channel reads (Caffe's BGR: 2, 1, 0)
    scale: tuple[float, ...]
    shift: tuple[float, ...]


@dataclass(frozen=True)
class Input:
    """The image a variant was designed for; any size the spec admits runs."""

    channels: int = 3
    size: int = 224
    transform: InputTransform | None = None  # offered as the transform_input option


@dataclass(frozen=True)
class Variant:
    """A complete GoogLeNet: its rows in order, and the settings that apply everywhere."""

    name: str
    description: str
    source: str  # where it comes from, with a link
    rows: tuple[Row, ...]
    convs: ConvSettings
    branch3: Branch3
    branch_pool: Pool  # the pool opening branch 4 of every Inception block
    aux: InceptionAux | None
    head: Head
    input: Input = Input()
