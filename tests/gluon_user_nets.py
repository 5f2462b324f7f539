"""d2l's MXNet Gluon GoogLeNet (https://d2l.ai/chapter_convolutional-modern/googlenet.html,
the MXNet tab; the same code in the Chinese edition's notes) as a reader types it in:
``Inception`` a plain ``nn.Block`` concatenating with ``nd.concat``, or, to hybridize it,
a ``HybridBlock`` with ``F.concat``. Switches for the mistakes the tests make. Not built
by the suite: what ``verify`` is for."""

import numpy

if "bool" not in numpy.__dict__:  # MXNet 1.9 uses the alias numpy 1.24 removed: every reader sets it
    numpy.bool = bool  # type: ignore[attr-defined]

import mxnet as mx
from mxnet import gluon, init, nd
from mxnet.gluon import nn


class Inception(nn.Block):
    def __init__(self, c1, c2, c3, c4, swap=False, **kwargs):
        super().__init__(**kwargs)
        self.p1_1 = nn.Conv2D(c1, kernel_size=1, activation="relu")
        self.p2_1 = nn.Conv2D(c2[0], kernel_size=1, activation="relu")
        self.p2_2 = nn.Conv2D(c2[1], kernel_size=3, padding=1, activation="relu")
        self.p3_1 = nn.Conv2D(c3[0], kernel_size=1, activation="relu")
        self.p3_2 = nn.Conv2D(c3[1], kernel_size=5, padding=2, activation="relu")
        self.p4_1 = nn.MaxPool2D(pool_size=3, strides=1, padding=1)
        self.p4_2 = nn.Conv2D(c4, kernel_size=1, activation="relu")
        self.swap = swap

    def forward(self, x):
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        if self.swap:  # the 3x3 and 5x5 branches concatenated in each other's place
            return nd.concat(p1, p3, p2, p4, dim=1)
        return nd.concat(p1, p2, p3, p4, dim=1)


class HybridInception(nn.HybridBlock):
    def __init__(self, c1, c2, c3, c4, swap=False, **kwargs):
        super().__init__(**kwargs)
        self.p1_1 = nn.Conv2D(c1, kernel_size=1, activation="relu")
        self.p2_1 = nn.Conv2D(c2[0], kernel_size=1, activation="relu")
        self.p2_2 = nn.Conv2D(c2[1], kernel_size=3, padding=1, activation="relu")
        self.p3_1 = nn.Conv2D(c3[0], kernel_size=1, activation="relu")
        self.p3_2 = nn.Conv2D(c3[1], kernel_size=5, padding=2, activation="relu")
        self.p4_1 = nn.MaxPool2D(pool_size=3, strides=1, padding=1)
        self.p4_2 = nn.Conv2D(c4, kernel_size=1, activation="relu")
        self.swap = swap

    def hybrid_forward(self, F, x):
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        if self.swap:
            return F.concat(p1, p3, p2, p4, dim=1)
        return F.concat(p1, p2, p3, p4, dim=1)


def d2l_net(hybrid=False, swap=False, seed=0):
    """d2l's GoogLeNet for Fashion-MNIST (1 x 96 x 96, 10 classes), initialised as the
    chapter does (Xavier) and run once on an input of that shape, as the chapter does to
    print each block's output shape."""
    mx.random.seed(seed)
    Sequential = nn.HybridSequential if hybrid else nn.Sequential
    Block = HybridInception if hybrid else Inception

    def inception(*args):
        return Block(*args, swap=swap)

    b1 = Sequential()
    b1.add(
        nn.Conv2D(64, kernel_size=7, strides=2, padding=3, activation="relu"),
        nn.MaxPool2D(pool_size=3, strides=2, padding=1),
    )
    b2 = Sequential()
    b2.add(
        nn.Conv2D(64, kernel_size=1, activation="relu"),
        nn.Conv2D(192, kernel_size=3, padding=1, activation="relu"),
        nn.MaxPool2D(pool_size=3, strides=2, padding=1),
    )
    b3 = Sequential()
    b3.add(
        inception(64, (96, 128), (16, 32), 32),
        inception(128, (128, 192), (32, 96), 64),
        nn.MaxPool2D(pool_size=3, strides=2, padding=1),
    )
    b4 = Sequential()
    b4.add(
        inception(192, (96, 208), (16, 48), 64),
        inception(160, (112, 224), (24, 64), 64),
        inception(128, (128, 256), (24, 64), 64),
        inception(112, (144, 288), (32, 64), 64),
        inception(256, (160, 320), (32, 128), 128),
        nn.MaxPool2D(pool_size=3, strides=2, padding=1),
    )
    b5 = Sequential()
    b5.add(
        inception(256, (160, 320), (32, 128), 128),
        inception(384, (192, 384), (48, 128), 128),
        nn.GlobalAvgPool2D(),
    )
    net = Sequential()
    net.add(b1, b2, b3, b4, b5, nn.Dense(10))
    net.initialize(init=init.Xavier())
    if hybrid:
        net.hybridize()
    net(nd.zeros((1, 1, 96, 96)))
    return net


def d2l():
    return d2l_net()


def d2l_swapped():
    return d2l_net(swap=True)


def d2l_hybrid():
    return d2l_net(hybrid=True)


def d2l_hybrid_swapped():
    return d2l_net(hybrid=True, swap=True)


def export(net: gluon.HybridBlock, path: str) -> None:
    """``HybridBlock.export`` as a user calls it after hybridizing and one forward pass."""
    net.export(path)
