"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

``wrn_D_k``: depth D = 6n+4, widen factor k; a 3x3 stem of 16 channels, then three stages
of n pre-activation blocks with widths (16k, 32k, 64k) and strides (1, 2, 2), then BN-ReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier
from .registry import register_model
from .resnet import init_weights


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (pre-activation).

    When the shape changes, the shortcut is a 1x1 conv of the activated input.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv1(a)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(Classifier):
    def __init__(self, depth: int, k: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * k, 32 * k, 64 * k)
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stages, cin = [], 16
        for cout, stride in zip(widths, (1, 2, 2)):
            blocks = [PreActBlock(cin, cout, stride)] + [PreActBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[-1])
        self.num_features = widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return torch.relu(self.bn(x))


def _register(depth: int, k: int) -> None:
    name = f"wrn_{depth}_{k}"

    def build(num_classes: int, in_shape: tuple[int, ...]) -> Classifier:
        return WideResNet(depth, k, num_classes, in_channels=in_shape[0])

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"WRN-{depth}-{k}."
    globals()[name] = register_model(name)(build)


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _k)
