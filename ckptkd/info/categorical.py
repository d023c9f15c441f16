"""Information carried by the softmax output, treating the prediction as categorical.

Yhat | x ~ Cat(p_tau(x)) with p_tau = softmax(logits / tau). For the empirical joint law
(X uniform on the N probe points, Y their labels) the mutual informations are exact
sums, O(N C), and bounded by log C (the number of classes). All values in nats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import CkptkdError
from .kde import as_labels, label_entropy


def softmax_probs(logits, tau: float = 1.0) -> torch.Tensor:
    """p_tau = softmax(logits / tau) over the last axis, float64 (N, C)."""
    if tau <= 0:
        raise CkptkdError(f"temperature tau must be positive, got {tau}")
    return torch.softmax(torch.as_tensor(logits).detach().to(torch.float64) / tau, dim=-1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum_k p_k log p_k along the last axis (0 log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


@dataclass
class CategoricalResult:
    """I(X;Yhat), I(Y;Yhat) (None without labels), H(Yhat) = H(mean p), H(Y), in nats."""

    ixf: float
    iyf: Optional[float]
    h_pred: float
    hy: Optional[float]
    n: int
    n_classes: int


def categorical_mi(probs, y=None) -> CategoricalResult:
    """Exact MI of the categorical prediction for the empirical distribution.

        I(X;Yhat) = H(pbar) - (1/N) sum_i H(p_i)
        I(Y;Yhat) = H(pbar) - sum_c pi_c H(pbar_c)

    pbar is the mean of the rows of ``probs`` (N, C), pbar_c the mean over the rows of
    class c, pi_c the class frequency. By concavity of H, 0 <= I(Y;Yhat) <= I(X;Yhat)
    <= min(log C, log N). (The categorical/"softmax" view of the output layer, cf. the
    discrete-output analyses in Shwartz-Ziv & Tishby 2017.) Rows must sum to 1: build them
    with ``softmax_probs``. Expect it to grow as predictions sharpen during training.
    """
    p = torch.as_tensor(probs).detach().to(torch.float64)
    if p.dim() != 2 or len(p) < 1:
        raise CkptkdError(f"probs must have shape (N, C), got {tuple(p.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise CkptkdError("probs rows must be probability vectors (use softmax_probs)")
    p = p / p.sum(1, keepdim=True)  # float32 softmax rows sum to 1 only to ~1e-6
    h_pred = float(_entropy(p.mean(0)))
    ixf = h_pred - float(_entropy(p).mean())
    iyf = hy = None
    if y is not None:
        y = as_labels(y, len(p))
        counts = torch.bincount(y).to(torch.float64)
        pbar_c = torch.zeros(len(counts), p.shape[1], dtype=torch.float64).index_add_(0, y, p)
        pbar_c /= counts[:, None]
        iyf = h_pred - float((counts / len(p) * _entropy(pbar_c)).sum())
        hy = label_entropy(y)
    return CategoricalResult(ixf, iyf, h_pred, hy, len(p), p.shape[1])
