"""Pairwise-distance (KDE) bounds on I(X;F) and the estimate of I(Y;F).

Kolchinsky & Tracey, "Estimating mixture entropy with pairwise distances", Entropy 2017;
used for deep nets by Saxe et al., "On the information bottleneck theory of deep
learning", ICLR 2018. Also home to the small helpers every estimator shares
(``standardize``, ``median_sq_dist``, ``InformationSaturationWarning``). All values in nats.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import CkptkdError

SATURATION_FRACTION = 0.95  # warn when an estimate of I(X;.) reaches 95% of log N


class InformationSaturationWarning(UserWarning):
    """An I(X;.) estimate is within 5% of its ceiling log N: it no longer ranks anything."""


def as_features(f) -> torch.Tensor:
    """``f`` as a float64 (N, d) matrix: rows are samples, trailing axes are flattened."""
    f = torch.as_tensor(f).detach().to(torch.float64)
    if f.dim() == 0:
        raise CkptkdError("features must have a sample axis, got a scalar")
    f = f.reshape(len(f), -1)
    if len(f) < 2:
        raise CkptkdError(f"need at least 2 samples to estimate information, got {len(f)}")
    return f


def as_labels(y, n: int) -> torch.Tensor:
    """Class labels as a (N,) int64 tensor of indices 0..C-1; one-hot (N, C) is argmax'd."""
    y = torch.as_tensor(y).detach()
    if y.dim() == 2:
        y = y.argmax(1)
    if y.dim() != 1 or len(y) != n:
        raise CkptkdError(f"labels must have shape ({n},) or ({n}, C), got {tuple(y.shape)}")
    return torch.unique(y, return_inverse=True)[1]


def label_entropy(y: torch.Tensor) -> float:
    """Plug-in H(Y) = -sum_c p_c log p_c of integer labels, in nats."""
    p = torch.bincount(y).to(torch.float64) / len(y)
    return float(-torch.special.xlogy(p, p).sum())


def check_saturation(value: float, n: int, what: str) -> bool:
    """True, with an ``InformationSaturationWarning``, when value >= 95% of log N."""
    saturated = value >= SATURATION_FRACTION * math.log(n)
    if saturated:
        warnings.warn(
            f"{what} = {value:.4g} nats is within 5% of log N = {math.log(n):.4g}: the "
            "estimate is saturated (noise/bin width too small for the feature spread)",
            InformationSaturationWarning,
            stacklevel=3,
        )
    return saturated


def standardize(f) -> torch.Tensor:
    """Per-dimension z-score (f - mean) / std (population std), in float64.

    Columns whose std is 0, or below 1e-10 of their largest magnitude (rounding noise of a
    constant column), are only centred. Makes every estimate here invariant to the scale
    of each feature, e.g. to feature norms that grow during training.
    """
    f = as_features(f)
    f = f - f.mean(0)
    std = f.std(0, correction=0)
    tiny = std <= 1e-10 * f.abs().amax(0)
    return f / torch.where(tiny | (std == 0), torch.ones_like(std), std)


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances D_ij = ||a_i - b_j||^2, clamped at 0 against rounding."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


MEDIAN_POINTS = 2000  # the median pairwise distance is taken over at most this many rows


def median_sq_dist(f, max_points: int = MEDIAN_POINTS, seed: int = 0) -> float:
    """Median of D_ij = ||f_i - f_j||^2 over the pairs i < j.

    If N > ``max_points``, the median is taken over a subsample of ``max_points`` rows
    drawn with a fixed seed, so the result is deterministic and costs O(max_points^2).
    """
    f = as_features(f)
    if len(f) > max_points:
        g = torch.Generator().manual_seed(seed)
        f = f[torch.randperm(len(f), generator=g)[:max_points]]
    return _upper_median(sq_dists(f, f))


def _upper_median(d: torch.Tensor) -> float:
    """Lower median of the strictly upper triangle of a square matrix."""
    n = len(d)
    return float(d[torch.ones(n, n, dtype=torch.bool).triu_(1)].median())


def kernel_sums(f: torch.Tensor, s2s: Sequence[float], groups: Optional[torch.Tensor] = None,
                block: int = 1024, dists: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """S_i = sum_j exp(-D_ij / (2 s2)) for each width, and the same sum over j in i's group.

    Returns ``(total, within)``, each (len(s2s), N); ``within`` is None without ``groups``
    (integer labels 0..C-1). One pass over (block, N) distance blocks serves every width
    and every group: the group sums are the kernel block times the one-hot group matrix.
    Every S_i >= 1 (the j = i term is exp(0)), so no log-sum-exp shift is needed.
    ``dists``: the full (N, N) matrix D when the caller already has it.
    """
    n = len(f)
    onehot = None if groups is None else torch.nn.functional.one_hot(groups).to(f.dtype)
    total = torch.empty(len(s2s), n, dtype=f.dtype)
    within = None if groups is None else torch.empty(len(s2s), n, dtype=f.dtype)
    for i0 in range(0, n, block):
        rows = slice(i0, i0 + block)
        d = sq_dists(f[rows], f) if dists is None else dists[rows]  # (B, N)
        for k, s2 in enumerate(s2s):
            e = torch.exp(d * (-0.5 / s2))
            total[k, rows] = e.sum(1)
            if onehot is not None:
                within[k, rows] = (e @ onehot).gather(1, groups[rows, None]).squeeze(1)
    return total, within


def mixture_entropies(f: torch.Tensor, s2s: Sequence[float], block: int = 1024) -> torch.Tensor:
    """``kde_entropy`` for several widths at once, sharing each (block, N) distance block."""
    total, _ = kernel_sums(f, s2s, block=block)
    return math.log(len(f)) - total.log().mean(1)


def kde_entropy(f, s2: float, block: int = 1024) -> float:
    """Mixture entropy term -(1/N) sum_i log[(1/N) sum_j exp(-D_ij / (2 s2))], in nats.

    D_ij = ||f_i - f_j||^2. This is Kolchinsky & Tracey's (2017) KL-based upper estimate of
    H(T') for T' = f_I + N(0, s2 I), I uniform on the N rows, minus the constant
    H(N(0, s2 I)), i.e. their upper bound on I(X;T'). ``kde_entropy(f, 4 * s2)`` gives the
    Bhattacharyya-based lower bound (8 s2 in the denominator). Rows are processed
    ``block`` at a time, so memory is O(N * block). Lies in [0, log N].
    """
    if s2 <= 0:
        raise CkptkdError(f"kernel variance s2 must be positive, got {s2}")
    return float(mixture_entropies(as_features(f), [s2], block)[0])


@dataclass
class KDEResult:
    """KDE bounds, in nats. ``iyf_*`` and ``hy`` are None without labels.

    ``ixf_upper``/``ixf_lower`` bound I(X;T') (X uniform on the N probe points); ``iyf_*``
    are H(T') - sum_c p_c H(T'|Y=c) with the upper / lower entropy estimate (an estimate,
    not a strict bound). ``saturated``: ixf_upper >= 95% of log N.
    """

    ixf_upper: float
    ixf_lower: float
    iyf_upper: Optional[float]
    iyf_lower: Optional[float]
    s2: float
    n: int
    hy: Optional[float]
    saturated: bool


def kde_mi(
    f,
    y=None,
    *,
    s2: Optional[float] = None,
    noise_fraction: float = 0.1,
    standardize_features: bool = True,
    block: int = 1024,
) -> KDEResult:
    """Kolchinsky & Tracey (2017) bounds on I(X;F), and I(Y;F), for features f (N, d).

    With D_ij = ||f_i - f_j||^2 (after per-dimension standardisation by default):
        ixf_upper = -(1/N) sum_i log[(1/N) sum_j exp(-D_ij / (2 s2))]
        ixf_lower = the same with 8 s2 in place of 2 s2
        iyf_*     = H(T') - sum_c p_c H(T'|Y=c), each entropy the same estimate on the
                    whole set / on class c's rows (the constants cancel), labels ``y``.
    Saxe et al. (ICLR 2018) use this to track I(X;T) and I(Y;T) of hidden layers.

    ``s2`` is the variance of the Gaussian noise added to F; if None it is
    ``noise_fraction * median_sq_dist(f)`` (falling back to the mean D if the median is 0,
    and to 1 if every point is identical), so the estimate does not depend on the scale
    of F. Emits ``InformationSaturationWarning`` when ixf_upper is within 5% of log N.

    Cost O(N^2 d), one pass over the distances for both bounds and every class. Memory is
    the (N, N) distance matrix up to ``MEDIAN_POINTS`` rows (which the median needs
    anyway), and O(N * block) beyond.
    """
    f = standardize(f) if standardize_features else as_features(f)
    n = len(f)
    dists = None
    if s2 is None:
        # up to MEDIAN_POINTS rows the median needs every distance: keep them for the sums
        dists = sq_dists(f, f) if n <= MEDIAN_POINTS else None
        s2 = noise_fraction * _spread(f, dists)
    if s2 <= 0:
        raise CkptkdError(f"kernel variance s2 must be positive, got {s2}")
    widths = [s2, 4.0 * s2]
    iyf_upper = iyf_lower = hy = None
    if y is None:
        total, _ = kernel_sums(f, widths, block=block, dists=dists)
    else:
        y = as_labels(y, n)
        hy = label_entropy(y)
        total, within = kernel_sums(f, widths, y, block, dists)
    ixf = math.log(n) - total.log().mean(1)  # H(T') up to its constant, per width
    if y is not None:
        # sum_c p_c H(T'|Y=c) with H(T'|Y=c) = log n_c - mean over class c of log(within sums)
        counts = torch.bincount(y).to(f.dtype)
        cond = (counts * counts.log()).sum() / n - within.log().mean(1)
        iyf_upper, iyf_lower = (ixf - cond).tolist()
    ixf_upper, ixf_lower = ixf.tolist()
    saturated = check_saturation(ixf_upper, n, "KDE upper bound on I(X;F)")
    return KDEResult(ixf_upper, ixf_lower, iyf_upper, iyf_lower, float(s2), n, hy, saturated)


def _spread(f: torch.Tensor, dists: Optional[torch.Tensor] = None) -> float:
    """median D, else mean D (over a deterministic subsample), else 1 (all points equal).

    ``dists``: the full distance matrix of ``f``, when it has at most MEDIAN_POINTS rows.
    """
    med = _upper_median(dists) if dists is not None else median_sq_dist(f)
    if med > 0:
        return med
    sub = f[:: max(1, len(f) // MEDIAN_POINTS)]
    mean = float(sq_dists(sub, sub).mean())
    return mean if mean > 0 else 1.0
