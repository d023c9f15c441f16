"""Binning estimate of I(X;T) and I(Y;T) (Shwartz-Ziv & Tishby, "Opening the black box
of deep neural networks via information", 2017). For comparison only: it saturates at
log N in high dimension and depends entirely on the bin width. All values in nats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import CkptkdError
from .kde import as_features, as_labels, check_saturation, label_entropy


def bin_codes(f, bins: int = 30) -> torch.Tensor:
    """Quantise each column into ``bins`` equal-width bins over its own [min, max]:
    code = floor((f - min) / (max - min) * bins), the max falling in the last bin; a
    constant column is all bin 0. Returns int64 (N, d)."""
    if bins < 1:
        raise CkptkdError(f"bins must be >= 1, got {bins}")
    f = as_features(f)
    lo, hi = f.amin(0), f.amax(0)
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((f - lo) / width * bins).floor().clamp_(0, bins - 1).to(torch.int64)


def _discrete_entropy(codes: torch.Tensor) -> float:
    """Plug-in entropy of the distinct rows of ``codes``."""
    counts = torch.unique(codes, dim=0, return_counts=True)[1].to(torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


@dataclass
class BinningResult:
    """I(X;T) = H(T), I(Y;T) (None without labels), H(Y), in nats; ``saturated``:
    I(X;T) >= 95% of log N."""

    ixf: float
    iyf: Optional[float]
    hy: Optional[float]
    n: int
    bins: int
    saturated: bool


def binning_mi(f, y=None, bins: int = 30) -> BinningResult:
    """Shwartz-Ziv & Tishby (2017): T = bin_codes(f, bins), then with plug-in entropies

        I(X;T) = H(T)                          (T is a function of X)
        I(Y;T) = H(T) - sum_c p_c H(T | Y=c)

    Emits ``InformationSaturationWarning`` when I(X;T) is within 5% of log N, i.e. when
    nearly every probe point lands in its own cell.
    """
    codes = bin_codes(f, bins)
    n = len(codes)
    ixf = _discrete_entropy(codes)
    iyf = hy = None
    if y is not None:
        y = as_labels(y, n)
        hy = label_entropy(y)
        cond = sum((y == c).sum().item() / n * _discrete_entropy(codes[y == c])
                   for c in range(int(y.max()) + 1))
        iyf = ixf - cond
    saturated = check_saturation(ixf, n, "binning estimate of I(X;T)")
    return BinningResult(ixf, iyf, hy, n, bins, saturated)
