"""Temperature scaling (Guo et al., ICML 2017): the T that minimises the NLL of softmax(z / T).

The NLL of softmax(beta * z) is convex in beta = 1/T (a log-sum-exp minus a linear term),
so it is unimodal in log T too, and a golden-section search on log T finds the minimum
without gradients or a learning rate.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

T_RANGE = (1e-2, 1e2)  # an optimum outside means (nearly) separable or (nearly) useless logits


def nll(logits: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, y))


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, iters: int = 80) -> tuple[float, float]:
    """(T, NLL at T) minimising the mean NLL of ``logits / T`` for labels ``y``, T in T_RANGE."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    f = lambda log_t: nll(logits, y, math.exp(log_t))  # noqa: E731
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):  # each step keeps the bracket that holds the minimum, 0.618 as long
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    t = math.exp((lo + hi) / 2)
    return t, nll(logits, y, t)
