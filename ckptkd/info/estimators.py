"""Mutual-information estimators for checkpoint analysis: pure functions on tensors.

Algorithm 1 of "Efficient Knowledge Distillation from Model Checkpoints" (NeurIPS 2022)
ranks checkpoints by normalised I(X;F) and I(Y;F), F the penultimate features, without
saying how to estimate them. The estimators here (all in nats, float64):

- ``kde_mi``        pairwise-distance bounds (Kolchinsky & Tracey 2017; Saxe et al. 2018)
- ``renyi_mi``      matrix-based Renyi alpha-entropy (Sanchez Giraldo et al. 2015; Yu et al. 2020)
- ``categorical_mi`` exact MI of the softmax prediction for the empirical distribution
- ``binning_mi``    binning (Shwartz-Ziv & Tishby 2017), for comparison only

Estimates of I(X;.) near their ceiling log N emit ``InformationSaturationWarning``.
Each function's docstring gives its formula and source; the known-answer tests are in
``tests/test_info_estimators.py``.
"""
import math

from .binning import BinningResult, bin_codes, binning_mi
from .categorical import CategoricalResult, categorical_mi, softmax_probs
from .kde import (
    InformationSaturationWarning,
    KDEResult,
    kde_entropy,
    kde_mi,
    median_sq_dist,
    standardize,
)
from .renyi import (
    RenyiResult,
    default_sigma,
    gaussian_gram,
    label_gram,
    renyi_entropy,
    renyi_ixf,
    renyi_iyf,
    renyi_mi,
)


def to_bits(x):
    """Convert nats to bits: x / ln 2 (works on floats and tensors)."""
    return x / math.log(2.0)


__all__ = [
    "BinningResult", "CategoricalResult", "InformationSaturationWarning", "KDEResult",
    "RenyiResult", "bin_codes", "binning_mi", "categorical_mi", "default_sigma",
    "gaussian_gram", "kde_entropy", "kde_mi", "label_gram",
    "median_sq_dist", "renyi_entropy", "renyi_ixf", "renyi_iyf", "renyi_mi",
    "softmax_probs", "standardize", "to_bits",
]
