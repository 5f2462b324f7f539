"""GoogLeNets written the way users write them (plain ``nn.Module`` code, their own
names), not built by the suite: what ``verify`` is for. ``D2lNet`` is d2l's PyTorch
GoogLeNet (https://d2l.ai/chapter_convolutional-modern/googlenet.html) as a reader types
it in, with switches for the mistakes and changes the tests make."""

import torch
import torch.nn.functional as F
from torch import nn


class Inception(nn.Module):
    def __init__(self, in_channels, c1, c2, c3, c4, kernel3=5, swap=False, relu4=True):
        super().__init__()
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=kernel3, padding=kernel3 // 2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)
        self.swap, self.relu4 = swap, relu4

    def forward(self, x):
        if self.swap:  # the third branch computed before the second: the same network
            p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
            p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        else:
            p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
            p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p1 = F.relu(self.p1_1(x))
        p4 = self.p4_2(self.p4_1(x))
        p4 = F.relu(p4) if self.relu4 else p4
        return torch.cat((p1, p2, p3, p4), dim=1)


def d2l_net(kernel3=5, swap=False, relu4=True, extra=False, truncated=False, classes=10):
    """d2l's GoogLeNet: ``kernel3`` branch 3's kernel; ``relu4`` False forgets the ReLU
    after the pool projection (a numeric mistake); ``extra`` adds a 1x1 conv after b2;
    ``truncated`` ends after inception5a."""

    def block(in_channels, c1, c2, c3, c4):
        return Inception(in_channels, c1, c2, c3, c4, kernel3=kernel3, swap=swap, relu4=relu4)

    b1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    b2 = nn.Sequential(
        nn.Conv2d(64, 64, kernel_size=1),
        nn.ReLU(),
        nn.Conv2d(64, 192, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    if extra:
        b2.append(nn.Conv2d(192, 192, kernel_size=1))
    b3 = nn.Sequential(
        block(192, 64, (96, 128), (16, 32), 32),
        block(256, 128, (128, 192), (32, 96), 64),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    b4 = nn.Sequential(
        block(480, 192, (96, 208), (16, 48), 64),
        block(512, 160, (112, 224), (24, 64), 64),
        block(512, 128, (128, 256), (24, 64), 64),
        block(512, 112, (144, 288), (32, 64), 64),
        block(528, 256, (160, 320), (32, 128), 128),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    last = [block(832, 256, (160, 320), (32, 128), 128)]
    if not truncated:
        last.append(block(832, 384, (192, 384), (48, 128), 128))
    b5 = nn.Sequential(*last, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
    return nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(832 if truncated else 1024, classes))


def d2l():
    return d2l_net()


def d2l_3x3():
    return d2l_net(kernel3=3)


def d2l_swapped():
    return d2l_net(swap=True)


def d2l_no_relu():
    return d2l_net(relu4=False)


def d2l_extra():
    return d2l_net(extra=True)


def d2l_truncated():
    return d2l_net(truncated=True)


class BasicConv2d(nn.Module):  # torchvision's googlenet, typed in from its source
    def __init__(self, in_channels, out_channels, eps=0.001, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionBN(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, eps):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, eps, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, eps, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, eps, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, eps, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, eps, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, eps, kernel_size=1),
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchvisionStyle(nn.Module):
    """torchvision's GoogLeNet without aux heads, as a user writes it from the source;
    ``eps`` is BatchNorm's epsilon (torchvision's 1e-3; PyTorch's default 1e-5 is a
    mistake that changes every layer's output a little)."""

    def __init__(self, num_classes=1000, eps=0.001):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, eps, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, eps, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, eps, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = InceptionBN(192, 64, 96, 128, 16, 32, 32, eps)
        self.inception3b = InceptionBN(256, 128, 128, 192, 32, 96, 64, eps)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionBN(480, 192, 96, 208, 16, 48, 64, eps)
        self.inception4b = InceptionBN(512, 160, 112, 224, 24, 64, 64, eps)
        self.inception4c = InceptionBN(512, 128, 128, 256, 24, 64, 64, eps)
        self.inception4d = InceptionBN(512, 112, 144, 288, 32, 64, 64, eps)
        self.inception4e = InceptionBN(528, 256, 160, 320, 32, 128, 128, eps)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = InceptionBN(832, 256, 160, 320, 32, 128, 128, eps)
        self.inception5b = InceptionBN(832, 384, 192, 384, 48, 128, 128, eps)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4e(self.inception4d(self.inception4c(self.inception4b(self.inception4a(x)))))
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def torchvision_style():
    return TorchvisionStyle()


def torchvision_style_eps():
    return TorchvisionStyle(eps=1e-5)


def d2l_softmax():
    """d2l's GoogLeNet with a softmax at the end (a catalogue mistake: softmax-output)."""
    return nn.Sequential(d2l_net(), nn.Softmax(dim=1))
