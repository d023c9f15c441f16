"""Batch augmentation as tensor ops, deterministic per (seed, epoch, sample index).

The random parameters of every sample's view are drawn once per epoch for the whole
dataset, indexed by sample index. A sample's view therefore does not depend on batch
order or batch size, which is what lets teacher outputs be cached per view.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    shift: int = 0  # max shift in samples/pixels (pad then crop)
    flip: bool = False  # horizontal flip of images
    noise: float = 0.0  # std of additive Gaussian noise (signals)

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.flip or self.noise)

    def params(self, n: int, sample_shape: tuple[int, ...], seed: int, epoch: int) -> dict[str, torch.Tensor]:
        """Random parameters of all ``n`` samples' views in ``epoch``."""
        # arithmetic, not hash(): str hashing is salted per process
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % 2**63)
        spatial = len(sample_shape) - 1
        out = {"shift": torch.randint(-self.shift, self.shift + 1, (n, spatial), generator=g)}
        out["flip"] = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        if self.noise:  # signals are small: one epoch's noise for every sample fits easily
            out["noise"] = torch.randn((n, *sample_shape), generator=g)
        return out

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment batch ``x`` with the parameters ``p`` of its samples (already indexed)."""
        if not self.enabled:
            return x
        if self.shift:
            x = _shift(x, p["shift"], self.shift)
        if self.flip:
            x = torch.where(p["flip"].view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
        if self.noise:
            x = x + self.noise * p["noise"].to(x.dtype)
        return x


def _shift(x: torch.Tensor, shift: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each sample by its own offset, filling with zeros (pad-and-crop)."""
    b = x.shape[0]
    if x.dim() == 3:  # (B, C, L)
        L = x.shape[-1]
        xp = F.pad(x, (pad, pad))
        idx = (torch.arange(L) + pad + shift[:, 0:1]).unsqueeze(1).expand(-1, x.shape[1], -1)
        return xp.gather(2, idx)
    H, W = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(H) + pad + shift[:, 0:1]  # (B, H)
    cols = torch.arange(W) + pad + shift[:, 1:2]  # (B, W)
    out = xp[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def default_augment(kind: str, sample_shape: tuple[int, ...]) -> Augment:
    """The paper's CIFAR recipe for natural images; shift and noise for signals."""
    if kind == "signal":
        return Augment(shift=max(1, sample_shape[-1] // 10), noise=0.05)
    if kind == "image":
        return Augment(shift=max(1, sample_shape[-1] // 8), flip=True)
    if kind == "glyph":  # digits: flipping changes the class
        return Augment(shift=1)
    return Augment()
