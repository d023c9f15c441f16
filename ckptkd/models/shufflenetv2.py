"""CIFAR ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018).

The CRD model zoo's CIFAR layout: a 1x1 stem of 24 channels (no early downsampling), three
stages of one stride-2 down block plus (3, 7, 3) channel-split blocks, a 1x1 conv, total stride 8.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier
from .registry import register_model
from .resnet import init_weights

# stage widths and the last 1x1 conv's width per size
CONFIGS = {1.0: (116, 232, 464, 1024), 0.5: (48, 96, 192, 1024)}
BLOCKS = (3, 7, 3)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True):
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), *([nn.ReLU(inplace=True)] if relu else []))


def depthwise(channels: int, stride: int) -> nn.Sequential:
    return conv_bn(channels, channels, 3, stride, groups=channels, relu=False)


def shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def branch(cin: int, cout: int, stride: int) -> nn.Sequential:
    """1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU."""
    return nn.Sequential(conv_bn(cin, cout), depthwise(cout, stride), conv_bn(cout, cout))


class SplitBlock(nn.Module):
    """Half the channels pass through, the other half go through a branch; concat and shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = branch(channels // 2, channels // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], dim=1))


class DownBlock(nn.Module):
    """Both halves downsample: a depthwise-then-1x1 branch and a full branch; concat and shuffle."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(depthwise(cin, 2), conv_bn(cin, mid))
        self.right = branch(cin, mid, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shuffle(torch.cat([self.left(x), self.right(x)], dim=1))


class ShuffleNetV2(Classifier):
    def __init__(self, size: float, num_classes: int, in_channels: int = 3):
        super().__init__()
        *widths, last = CONFIGS[size]
        layers, cin = [conv_bn(in_channels, 24)], 24
        for cout, n in zip(widths, BLOCKS):
            layers += [DownBlock(cin, cout)] + [SplitBlock(cout) for _ in range(n)]
            cin = cout
        layers.append(conv_bn(cin, last))
        self.features = nn.Sequential(*layers)
        self.num_features = last
        self.fc = nn.Linear(last, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int, in_shape: tuple[int, ...]) -> Classifier:
    """CIFAR ShuffleNetV2 1.0x."""
    return ShuffleNetV2(1.0, num_classes, in_channels=in_shape[0])


@register_model("shufflenetv2_x0_5")
def shufflenetv2_x0_5(num_classes: int, in_shape: tuple[int, ...]) -> Classifier:
    """CIFAR ShuffleNetV2 0.5x."""
    return ShuffleNetV2(0.5, num_classes, in_channels=in_shape[0])
