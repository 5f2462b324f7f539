"""Every GoogLeNet variant as a table, one row per layer or block, as in Table 1 of
Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015, https://arxiv.org/abs/1409.4842).

This file holds only what a reader compares with the paper and with each source;
``conformance.spec.plan`` resolves a table into named units, shapes and counts.
Shape comments are for each variant's own input size.
"""

from __future__ import annotations

from dataclasses import replace

from .rows import (
    LRN,
    AdaptiveAvgPool,
    BatchNormSettings,
    Branch3,
    Conv,
    ConvSettings,
    Head,
    Inception,
    InceptionA,
    InceptionAux,
    Input,
    InputTransform,
    Pool,
    ReLU,
    Residual,
    Row,
    Variant,
)


def with_rows(rows: tuple[Row, ...], *new: Row) -> tuple[Row, ...]:
    """``rows`` with each row of the same name as one of ``new`` replaced by it."""
    by_name = {r.name: r for r in new}
    missing = set(by_name) - {r.name for r in rows}
    if missing:
        raise ValueError(f"no row named {sorted(missing)}")
    return tuple(by_name.get(r.name, r) for r in rows)


def inserted(rows: tuple[Row, ...], after: str, row: Row) -> tuple[Row, ...]:
    """``rows`` with ``row`` inserted after the row named ``after``."""
    names = [r.name for r in rows]
    i = names.index(after) + 1
    return (*rows[:i], row, *rows[i:])


def max_pool(name: str, kernel: int = 3, stride: int = 2) -> Pool:
    """The paper's max pool: 3x3/2, rounding the output size up (Caffe, torchvision)."""
    return Pool(name, "max", kernel, stride, ceil_mode=True)


def padded_max_pool(name: str) -> Pool:
    """d2l's and pytorch-cifar100's max pool: 3x3/2, padding 1, rounding down."""
    return Pool(name, "max", 3, 2, padding=1)


# The ImageNet statistics torchvision's models normalise RGB input in 0-1 with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def half_range(mean: tuple[float, ...], std: tuple[float, ...]) -> InputTransform:
    """torchvision's ``transform_input``: normalised input back to (x - 0.5) / 0.5, the
    normalisation of the Inception weights torchvision took from TensorFlow."""
    return InputTransform((0, 1, 2), tuple(s / 0.5 for s in std), tuple((m - 0.5) / 0.5 for m in mean))


def caffe_bgr(mean: tuple[float, ...], std: tuple[float, ...], pixel_mean: tuple[float, ...]) -> InputTransform:
    """Caffe's input: normalised RGB back to BGR pixels in 0-255 (OpenCV's order, which
    Caffe's ImageNet models were trained on) less ``pixel_mean`` (in BGR order)."""
    order = (2, 1, 0)  # B, G, R: each reads the input's channel 2, 1, 0
    return InputTransform(
        order,
        tuple(255 * std[o] for o in order),
        tuple(255 * mean[o] - m for o, m in zip(order, pixel_mean, strict=True)),
    )


# fmt: off
TABLE1 = (                   # 1x1 3x3red 3x3 5x5red 5x5 pool   out   @224
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
_3a, _3b, _4a, _4b, _4c, _4d, _4e, _5a, _5b = TABLE1

GOOGLENET = Variant(
    name="googlenet",
    description="the paper network: conv + bias + ReLU, 5x5 branch 3, 3x3/2 ceil max pools, "
                "aux avg pool 5x5/3, dropout 0.4",
    source="the paper (https://arxiv.org/abs/1409.4842), as WZMIAOMIAO's PyTorch GoogLeNet builds it "
           "(https://github.com/WZMIAOMIAO/deep-learning-for-image-processing, "
           "pytorch_classification/Test4_googlenet/model.py)",
    rows=(                                                      # N x    3 x 224 x 224
        Conv("conv1", 64, 7, stride=2, padding=3),              # N x   64 x 112 x 112
        max_pool("maxpool1"),                                   # N x   64 x  56 x  56
        Conv("conv2", 64, 1),                                   # N x   64 x  56 x  56
        Conv("conv3", 192, 3, padding=1),                       # N x  192 x  56 x  56
        max_pool("maxpool2"),                                   # N x  192 x  28 x  28
        _3a, _3b,
        max_pool("maxpool3"),                                   # N x  480 x  14 x  14
        _4a, _4b, _4c, _4d, _4e,
        max_pool("maxpool4"),                                   # N x  832 x   7 x   7
        _5a, _5b,
    ),
    convs=ConvSettings(norm=None, bias=True),
    branch3=Branch3(kernel=5),
    branch_pool=Pool("branch_pool", "max", 3, 1, padding=1, ceil_mode=True),
    aux=InceptionAux(pool=Pool("pool", "avg", 5, 3)),                # 14 x 14 -> 4 x 4
    head=Head(dropout=0.4),                                     # global average pool
)

# torchvision's googlenet (https://github.com/pytorch/vision/blob/main/torchvision/models/googlenet.py)
GOOGLENET_BN = replace(
    GOOGLENET,
    name="googlenet_bn",
    description="torchvision's googlenet: conv (no bias) + BatchNorm(eps 1e-3) + ReLU, 3x3 branch 3, "
                "2x2/2 ceil pool before 5a, adaptive 4x4 aux pool, dropout 0.2, optional transform_input",
    source="torchvision (https://github.com/pytorch/vision/blob/main/torchvision/models/googlenet.py)",
    rows=with_rows(GOOGLENET.rows, max_pool("maxpool4", kernel=2)),
    convs=ConvSettings(norm=BatchNormSettings(eps=1e-3), bias=False),
    branch3=Branch3(kernel=3),  # torchvision's known bug (https://github.com/pytorch/vision/issues/906), kept
    aux=InceptionAux(pool=AdaptiveAvgPool("pool", 4)),
    head=Head(dropout=0.2),
    input=Input(transform=half_range(IMAGENET_MEAN, IMAGENET_STD)),
)

# GluonCV's googlenet: torchvision's layers and weights, but its own pools and head.
GOOGLENET_GLUONCV = replace(
    GOOGLENET_BN,
    name="googlenet_gluoncv",
    description="GluonCV's googlenet: torchvision's layers, but a 2x2/2 pool before 5a without ceil, "
                "avg 5x5/3 aux pools, a fixed 7x7 head pool (inputs 223-446) and dropout 0.4",
    source="GluonCV (https://github.com/dmlc/gluon-cv/blob/master/gluoncv/model_zoo/googlenet.py)",
    rows=with_rows(GOOGLENET.rows, Pool("maxpool4", "max", 2, 2)),
    aux=GOOGLENET.aux,
    head=Head(pool=Pool("avgpool", "avg", 7, 7), dropout=0.4),  # = global at 224; needs a 7..13 map
    input=Input(),
)

# Caffe's bvlc_googlenet (models/bvlc_googlenet/deploy.prototxt and train_val.prototxt):
# the paper network with two LocalResponseNorms, every pool rounding up (Caffe's only
# rule), a fixed 7x7/1 head pool, and Caffe's input (BGR pixels less the mean pixel).
GOOGLENET_LRN = replace(
    GOOGLENET,
    name="googlenet_lrn",
    description="Caffe's bvlc_googlenet: the paper network with LocalResponseNorm(5, 1e-4, 0.75) after the "
                "first pool and after conv3, every pool rounding up (the aux heads' avg 5x5/3 too), a fixed "
                "7x7/1 head pool (inputs 223-254), optional transform_input to Caffe's BGR 0-255 less "
                "(104, 117, 123)",
    source="Caffe (https://github.com/BVLC/caffe/tree/master/models/bvlc_googlenet)",
    rows=inserted(inserted(GOOGLENET.rows, after="maxpool1", row=LRN("lrn1")), after="conv3", row=LRN("lrn2")),
    aux=InceptionAux(pool=Pool("pool", "avg", 5, 3, ceil_mode=True)),  # loss1/ave_pool: 12..14 x 12..14 -> 4 x 4
    head=Head(pool=Pool("avgpool", "avg", 7, 1, ceil_mode=True), dropout=0.4),  # pool5/7x7_s1: needs a 7 x 7 map
    input=Input(transform=caffe_bgr(IMAGENET_MEAN, IMAGENET_STD, pixel_mean=(104.0, 117.0, 123.0))),
)

# TF-slim's inception_v1 (tf_slim/nets/inception_v1.py in google-research/tf-slim, the
# same file as research/slim/nets/inception_v1.py in tensorflow/models), whose
# checkpoint inception_v1_2016_08_28 torchvision's weights came from. Table 1's widths
# and torchvision's names, but TensorFlow's SAME padding on every conv and pool, a
# BatchNorm without scale, a 7x7/1 VALID head pool and a 1x1 conv with bias to 1001
# classes (class 0 "background"), which is ``fc`` here (a 1 x 1 map makes them one).
def same_max_pool(name: str, kernel: int = 3, stride: int = 2) -> Pool:
    """slim's ``max_pool2d(padding="SAME")``: pads (0, 1) at 3x3/2 on an even map."""
    return Pool(name, "max", kernel, stride, same=True)


GOOGLENET_SLIM = replace(
    GOOGLENET_BN,
    name="googlenet_slim",
    description="TF-slim's inception_v1: TensorFlow's SAME padding everywhere (asymmetric at stride 2), "
                "3x3 branch 3, 2x2/2 pool before Mixed_5b, BatchNorm(eps 1e-3) without scale and no conv "
                "bias, 7x7/1 VALID head pool (inputs 193-224), dropout 0.2, 1001 classes (0: background), "
                "no aux heads, optional transform_input to [-1, 1]",
    source="TF-slim (https://github.com/google-research/tf-slim/blob/master/tf_slim/nets/inception_v1.py)",
    rows=(                                                      # N x    3 x 224 x 224
        Conv("conv1", 64, 7, stride=2),                         # N x   64 x 112 x 112  Conv2d_1a_7x7, pads (2, 3)
        same_max_pool("maxpool1"),                              # N x   64 x  56 x  56  MaxPool_2a_3x3, pads (0, 1)
        Conv("conv2", 64, 1),                                   # N x   64 x  56 x  56  Conv2d_2b_1x1
        Conv("conv3", 192, 3),                                  # N x  192 x  56 x  56  Conv2d_2c_3x3
        same_max_pool("maxpool2"),                              # N x  192 x  28 x  28  MaxPool_3a_3x3
        _3a, _3b,                                               #                       Mixed_3b, Mixed_3c
        same_max_pool("maxpool3"),                              # N x  480 x  14 x  14  MaxPool_4a_3x3
        _4a, _4b, _4c, _4d, _4e,                                #                       Mixed_4b .. Mixed_4f
        same_max_pool("maxpool4", kernel=2),                    # N x  832 x   7 x   7  MaxPool_5a_2x2
        _5a, _5b,                                               #                       Mixed_5b, Mixed_5c
    ),
    # decay 0.9997 is the old statistic's weight: the spec's (PyTorch's) momentum is 0.0003
    convs=ConvSettings(norm=BatchNormSettings(eps=1e-3, momentum=0.0003, scale=False), bias=False, same=True),
    branch3=Branch3(kernel=3),  # Branch_2/Conv2d_0b_3x3 (Conv2d_0a_3x3 in Mixed_5b): the paper's 5x5 is 3x3
    branch_pool=same_max_pool("branch_pool", stride=1),  # Branch_3/MaxPool_0a_3x3
    aux=None,
    head=Head(pool=Pool("avgpool", "avg", 7, 1), dropout=0.2, classes=1001),  # AvgPool_0a_7x7, keep_prob 0.8
    # slim's inception preprocessing: RGB in [-1, 1]
    input=Input(transform=half_range(IMAGENET_MEAN, IMAGENET_STD)),
)

# d2l's GoogLeNet: every max pool 3x3/2 with padding 1, Fashion-MNIST at 96 x 96.
GOOGLENET_D2L = replace(
    GOOGLENET,
    name="googlenet_d2l",
    description="d2l's GoogLeNet: 1 x 96 x 96 Fashion-MNIST, 10 classes, 3x3/2 pools with padding 1 "
                "and floor rounding, ReLU after every conv, no aux heads, no dropout",
    source="Dive into Deep Learning, 8.4 Multi-Branch Networks (GoogLeNet) "
           "(https://d2l.ai/chapter_convolutional-modern/googlenet.html)",
    rows=with_rows(GOOGLENET.rows, *map(padded_max_pool, ("maxpool1", "maxpool2", "maxpool3", "maxpool4"))),
    aux=None,
    head=Head(dropout=0.0, classes=10),
    input=Input(channels=1, size=96),
)

GOOGLENET_CIFAR = Variant(
    name="googlenet_cifar",
    description="pytorch-cifar100's GoogLeNet: 3 x 32 x 32, 100 classes, a stem of three bias-free 3x3 "
                "convs, conv + bias + BatchNorm + ReLU in the blocks, two stacked 3x3 convs in branch 3",
    source="pytorch-cifar100 (https://github.com/weiaicunzai/pytorch-cifar100/blob/master/models/googlenet.py)",
    rows=(                                                      # N x    3 x 32 x 32
        Conv("conv1", 64, 3, padding=1, bias=False),            # N x   64 x 32 x 32
        Conv("conv2", 64, 3, padding=1, bias=False),            # N x   64 x 32 x 32
        Conv("conv3", 192, 3, padding=1, bias=False),           # N x  192 x 32 x 32
        padded_max_pool("maxpool2"),                            # N x  192 x 16 x 16
        _3a, _3b,                                               # N x  480 x 16 x 16
        padded_max_pool("maxpool3"),                            # N x  480 x  8 x  8
        _4a, _4b, _4c, _4d, _4e,                                # N x  832 x  8 x  8
        padded_max_pool("maxpool4"),                            # N x  832 x  4 x  4
        _5a, _5b,                                               # N x 1024 x  4 x  4
    ),
    # the blocks' convs keep their bias before BatchNorm
    convs=ConvSettings(norm=BatchNormSettings(eps=1e-5), bias=True),
    branch3=Branch3(kernel=3, depth=2, width_as_eps=True),  # nn.BatchNorm2d(n5x5, n5x5): eps = n5x5
    branch_pool=Pool("branch_pool", "max", 3, 1, padding=1),
    aux=None,
    head=Head(dropout=0.4, classes=100),  # Dropout2d on an N x 1024 x 1 x 1 map: the same as Dropout
    input=Input(channels=3, size=32),
)

# Hongpu Liu's lecture "PyTorch Deep Learning Practice", Advanced CNN
# (https://www.bilibili.com/video/BV1Y7411d7Ys): two small MNIST nets, the lecture's own names.
INCEPTION_MNIST = Variant(
    name="inception_mnist",
    description="the Inception net of Hongpu Liu's lecture: 1 x 28 x 28 MNIST, conv 5x5 -> 2x2 max pool -> "
                "ReLU, two InceptionA blocks, fc on the flattened map",
    source="Hongpu Liu, PyTorch Deep Learning Practice, Advanced CNN (https://www.bilibili.com/video/BV1Y7411d7Ys)",
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
    convs=ConvSettings(norm=None, bias=True, plain=True),
    branch3=Branch3(kernel=3),  # unused: InceptionA spells its branches out
    branch_pool=Pool("pool", "avg", 3, 1, padding=1),  # F.avg_pool2d: zero padding counts
    aux=None,
    head=Head(pool=None, classes=10),
    input=Input(channels=1, size=28),
)

RESIDUAL_MNIST = replace(
    INCEPTION_MNIST,
    name="residual_mnist",
    description="the residual net of Hongpu Liu's lecture: 1 x 28 x 28 MNIST, two residual blocks "
                "relu(x + conv(relu(conv(x)))), fc `l` on the flattened map",
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
    head=Head(pool=None, classes=10, fc="l"),
)
# fmt: on

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        GOOGLENET,
        GOOGLENET_BN,
        GOOGLENET_GLUONCV,
        GOOGLENET_LRN,
        GOOGLENET_SLIM,
        GOOGLENET_D2L,
        GOOGLENET_CIFAR,
        INCEPTION_MNIST,
        RESIDUAL_MNIST,
    )
}
