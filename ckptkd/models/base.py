"""The feature API every ckptkd model shares (timm's convention).

``forward_features(x)`` returns the last feature map (unpooled), ``forward_head(f,
pre_logits=True)`` pools it to the penultimate feature vector F that the information
estimates use, and ``forward_head(f)`` returns logits. ``forward`` is the two in a row.
"""
import torch
from torch import nn


class Classifier(nn.Module):
    """Base class: subclasses build ``self.fc`` and implement ``forward_features``.

    ``num_features`` is the width of F (the input width of ``fc``).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        # global average over every spatial axis; vectors pass through
        return f.flatten(2).mean(-1) if f.dim() > 2 else f

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = self.pool(f)
        return f if pre_logits else self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """F for any model: the timm API when present, else the input of the last Linear."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise TypeError(f"{type(model).__name__} has no forward_features and no Linear head")
    captured = {}
    handle = last[-1].register_forward_hook(lambda m, inp, out: captured.setdefault("f", inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured["f"].flatten(1)
