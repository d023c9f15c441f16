"""Matrix-based Renyi alpha-entropy and mutual information.

Sanchez Giraldo, Rao & Principe, "Measures of entropy from data using infinitely
divisible kernels", IEEE Trans. Inf. Theory 2015; applied to deep nets by Yu, Wickstrom,
Jenssen & Principe, "Understanding convolutional neural networks with information
theory: an initial exploration", IEEE TNNLS 2020. All values in nats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import CkptkdError
from .kde import as_features, as_labels, median_sq_dist, sq_dists, standardize


def default_sigma(f) -> float:
    """Kernel width rule used when none is given: sigma = sqrt(median_ij D_ij / 2).

    D_ij = ||f_i - f_j||^2 of the (standardised) features, so a pair at the median distance
    has kernel value exp(-1): the Gram matrix is neither ~identity (sigma too small, every
    entropy at log N) nor ~all-ones (sigma too large, every entropy at 0).
    Falls back to 1 when more than half the pairs coincide.
    """
    med = median_sq_dist(f)
    return math.sqrt(med / 2.0) if med > 0 else 1.0


def gaussian_gram(f, sigma: float) -> torch.Tensor:
    """K_ij = exp(-||f_i - f_j||^2 / (2 sigma^2)), float64 (N, N)."""
    f = as_features(f)
    return torch.exp(-sq_dists(f, f) / (2.0 * sigma**2))


def label_gram(y) -> torch.Tensor:
    """K_ij = 1[y_i = y_j] for labels y (N,) or one-hot (N, C): the sigma -> 0 limit of a
    Gaussian kernel on one-hot labels. Its entropy is the Renyi entropy of the class
    frequencies (eigenvalues of K / N are the p_c)."""
    y = torch.as_tensor(y)
    y = as_labels(y, len(y))
    return (y[:, None] == y[None, :]).to(torch.float64)


def renyi_entropy(gram: torch.Tensor, alpha: float, method: str = "auto") -> float:
    """H_alpha(A) = 1/(1-alpha) log sum_k lambda_k(A)^alpha, A = K / tr(K).

    Eigenvalues by ``torch.linalg.eigvalsh`` (tiny negative ones clamped to 0); alpha = 1
    is the von Neumann (Shannon) limit -sum lambda log lambda. ``method``: "eig",
    "trace" (alpha = 2 only: sum lambda^2 = sum_ij K_ij^2 / tr(K)^2, no eigensolve, O(N^2))
    or "auto" (trace when alpha == 2). Lies in [0, log N].
    """
    if alpha <= 0:
        raise CkptkdError(f"Renyi order alpha must be positive, got {alpha}")
    a = gram.to(torch.float64) / torch.trace(gram)
    if method == "auto":
        method = "trace" if alpha == 2 else "eig"
    if method == "trace":
        if alpha != 2:
            raise CkptkdError(f"the trace form needs alpha = 2, got {alpha}")
        return float(-torch.log((a * a).sum()))
    if method != "eig":
        raise CkptkdError(f"method must be 'auto', 'eig' or 'trace', got {method!r}")
    lam = torch.linalg.eigvalsh(a).clamp_min(0.0)
    if alpha == 1:
        return float(-torch.special.xlogy(lam, lam).sum())
    return float(torch.log((lam**alpha).sum()) / (1.0 - alpha))


def renyi_mi_gram(ka: torch.Tensor, kb: torch.Tensor, alpha: float) -> tuple[float, float, float]:
    """(H(A), H(B), H(A o B / tr(A o B))) of two Gram matrices; I = H(A) + H(B) - H(joint)."""
    return renyi_entropy(ka, alpha), renyi_entropy(kb, alpha), renyi_entropy(ka * kb, alpha)


@dataclass
class RenyiResult:
    """Matrix-based Renyi I(F;G), averaged over random subsets, in nats.

    ``mi_std`` is the spread across subsets (0 with one subset); ``sigma_g`` is None for labels.
    """

    mi: float
    mi_std: float
    h_f: float
    h_g: float
    h_joint: float
    alpha: float
    sigma_f: float
    sigma_g: Optional[float]
    subset: int
    repeats: int


def renyi_mi(
    f,
    g,
    alpha: float = 1.01,
    sigma_f: Optional[float] = None,
    sigma_g: Optional[float] = None,
    subset: int = 1000,
    repeats: int = 3,
    seed: int = 0,
    standardize_features: bool = True,
) -> RenyiResult:
    """I_alpha(F;G) = H_alpha(A) + H_alpha(B) - H_alpha(A o B / tr(A o B)).

    A, B are the normalised Gaussian Gram matrices of f (N, d_f) and g (N, d_g) (trailing
    axes flattened); a 1-D g is class labels and B is ``label_gram(g)`` (pass a continuous
    scalar variable as (N, 1)). Sanchez Giraldo et al. (2015), Yu et al. (2020). Sigmas default to
    ``default_sigma`` of each subset. The eigensolve is O(n^3), so the estimate is the mean over
    ``repeats`` random subsets of ``subset`` rows (seeded); with N <= subset one pass over all
    rows. Beware: near alpha = 1 it is strongly biased upward in high dimension.
    """
    f = standardize(f) if standardize_features else as_features(f)
    g = torch.as_tensor(g)
    labels = g.dim() == 1
    if labels:
        g = as_labels(g, len(f))
    else:
        g = standardize(g) if standardize_features else as_features(g)
    if len(g) != len(f):
        raise CkptkdError(f"f and g must have the same number of rows, got {len(f)} and {len(g)}")
    n = len(f)
    runs = 1 if n <= subset else repeats
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(runs):
        idx = torch.arange(n) if n <= subset else torch.randperm(n, generator=gen)[:subset]
        sf = default_sigma(f[idx]) if sigma_f is None else sigma_f
        sg = None if labels else default_sigma(g[idx]) if sigma_g is None else sigma_g
        kb = label_gram(g[idx]) if labels else gaussian_gram(g[idx], sg)
        h = renyi_mi_gram(gaussian_gram(f[idx], sf), kb, alpha)
        rows.append([h[0] + h[1] - h[2], *h, sf, sg if sg is not None else math.nan])
    r = torch.tensor(rows, dtype=torch.float64)
    mean = r.mean(0).tolist()
    std = float(r[:, 0].std(correction=0))
    return RenyiResult(
        mean[0], std, mean[1], mean[2], mean[3], alpha, mean[4],
        None if labels else mean[5], min(n, subset), runs,
    )


def renyi_ixf(x, f, **kwargs) -> RenyiResult:
    """I_alpha(X;F), X the raw inputs flattened per sample (``sigma_g`` is X's width,
    ``sigma_f`` F's); other kwargs as ``renyi_mi``."""
    x = torch.as_tensor(x)
    return renyi_mi(f, x.reshape(len(x), -1).to(torch.float64), **kwargs)


def renyi_iyf(y, f, **kwargs) -> RenyiResult:
    """I_alpha(Y;F), labels y (N,) or one-hot (N, C) with the kernel 1[y_i = y_j]; kwargs as
    ``renyi_mi``."""
    f = as_features(f)
    return renyi_mi(f, as_labels(y, len(f)), **kwargs)
