"""Small models sized for MNIST-1D and digits, in several widths so teacher/student pairs exist.

``cnn1d_*`` are plain conv-BN-ReLU stacks over 1-D signals (``in_shape = (C, L)``); on
2-D images they see the rows concatenated. ``mlp_*`` flatten any input.
"""
import math

import torch
from torch import nn

from .base import Classifier
from .registry import register_model


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


class CNN1d(Classifier):
    """Stages of two 3-tap convs; each stage after the first halves the length."""

    def __init__(self, widths: tuple[int, ...], num_classes: int, in_shape: tuple[int, ...]):
        super().__init__()
        c_in = in_shape[0]
        layers = []
        for i, w in enumerate(widths):
            layers += [_conv_bn(c_in, w, stride=1 if i == 0 else 2), _conv_bn(w, w)]
            c_in = w
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 3:  # images: read the rows one after another
            x = x.flatten(2)
        return self.features(x)


class MLP(Classifier):
    def __init__(self, hidden: tuple[int, ...], num_classes: int, in_shape: tuple[int, ...]):
        super().__init__()
        dims = (math.prod(in_shape),) + hidden
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(nn.Flatten(), *layers)
        self.num_features = dims[-1]
        self.fc = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_CNN1D = {"cnn1d_xs": (8, 16), "cnn1d_s": (16, 32), "cnn1d_m": (32, 64, 64), "cnn1d_l": (64, 128, 128)}
_MLP = {"mlp_xs": (32,), "mlp_s": (64,), "mlp_m": (256, 128), "mlp_l": (512, 256)}

for _name, _widths in _CNN1D.items():
    register_model(_name)(lambda num_classes, in_shape, w=_widths: CNN1d(w, num_classes, in_shape))
for _name, _hidden in _MLP.items():
    register_model(_name)(lambda num_classes, in_shape, h=_hidden: MLP(h, num_classes, in_shape))
