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

    @property
    def name(self) -> str:
        """What it does, in the words of ``data.augment``: none, shift, shift+flip, shift+noise, ..."""
        parts = [p for p, on in (("shift", self.shift), ("flip", self.flip), ("noise", self.noise)) if on]
        return "+".join(parts) or "none"

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
    """What ``data.augment: default`` means for a kind of data.

    Flips only for natural images (CIFAR), the paper's recipe; they change what a glyph, a
    signal or an array of unknown meaning says, so ``grid`` (npz, a dataset function or an
    image folder: ckptkd cannot know what they show) only shifts; feature vectors (``tabular``)
    have no neighbourhood to shift in, so they get none.
    """
    if kind == "signal":
        return Augment(shift=_shift_size(kind, sample_shape), noise=0.05)
    if kind == "image":
        return Augment(shift=_shift_size(kind, sample_shape), flip=True)
    if kind in ("glyph", "grid"):
        return Augment(shift=_shift_size(kind, sample_shape))
    return Augment()


def choose_augment(choice: str, kind: str, sample_shape: tuple[int, ...]) -> Augment:
    """The augmentation ``data.augment`` (one of ``config.AUGMENT_CHOICES``) asks for on data of ``kind``."""
    if choice == "default":
        return default_augment(kind, sample_shape)
    if choice == "none":
        return Augment()
    return Augment(shift=_shift_size(kind, sample_shape), flip=choice == "shift+flip")


def _shift_size(kind: str, sample_shape: tuple[int, ...]) -> int:
    if kind == "glyph":  # 8x8 digits: one pixel is already an eighth of the glyph
        return 1
    return max(1, sample_shape[-1] // (10 if kind == "signal" else 8))
