"""CIFAR MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

The CRD model zoo's CIFAR adaptation: the ImageNet layout with the 24-channel stage at
stride 1, so the total stride is 16 (a 2x2 map for 32x32 inputs). Stage widths and the
stem scale with the width multiplier ``w``; the last 1x1 conv keeps 1280 channels for w <= 1.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier
from .registry import register_model
from .resnet import init_weights

# expansion t, channels c, blocks n, first stride s
SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; identity shortcut when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        mid = cin * t
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn_relu(cin, mid, 1),
            conv_bn_relu(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(Classifier):
    def __init__(self, width: float, num_classes: int, in_channels: int = 3):
        super().__init__()
        cin = int(32 * width)
        layers = [conv_bn_relu(in_channels, cin, 3, stride=2)]
        for t, c, n, s in SETTINGS:
            cout = max(int(c * width), 1)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.num_features = 1280 if width <= 1.0 else _divisible(1280 * width)
        layers.append(conv_bn_relu(cin, self.num_features, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def _register(name: str, width: float) -> None:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> Classifier:
        return MobileNetV2(width, num_classes, in_channels=in_shape[0])

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR MobileNetV2, width multiplier {width}."
    globals()[name] = register_model(name)(build)


for _name, _width in (("mobilenetv2", 1.0), ("mobilenetv2_x0_5", 0.5), ("mobilenetv2_x0_25", 0.25)):
    _register(_name, _width)
