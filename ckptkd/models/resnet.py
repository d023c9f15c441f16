"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The 6n+2-layer family of the paper's CIFAR experiments: a 3x3 stem, then three stages of
n BasicBlocks (strides 1, 2, 2). ``resnetD`` uses widths (16, 16, 32, 64) (stem, stages);
the wider ``resnetDx4`` variants of the CRD model zoo use (32, 64, 128, 256).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier
from .registry import register_model


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, BN weight 1 and bias 0 (shared by the CIFAR models)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (1x1 conv + BN when the shape changes) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    def __init__(self, depth: int, widths: tuple[int, ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> Classifier:
        return CifarResNet(depth, widths, num_classes, in_channels=in_shape[0])

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR ResNet-{depth}, widths {widths}."
    globals()[name] = register_model(name)(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _register(f"resnet{_depth}x4", _depth, (32, 64, 128, 256))
