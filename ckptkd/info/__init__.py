"""Information estimates: I(X;F) and I(Y;F) of checkpoints, and Algorithm 1's score.

``estimators`` holds the pure functions on tensors; ``analyze`` applies one of them to every
checkpoint of a trajectory on a fixed probe set.
"""
from . import registry  # noqa: F401  (checks info.estimator against the registered estimators)
from .estimators import (InformationSaturationWarning, binning_mi, categorical_mi, kde_mi, renyi_mi,
                         softmax_probs, standardize, to_bits)

__all__ = ["InformationSaturationWarning", "binning_mi", "categorical_mi", "kde_mi", "renyi_mi", "softmax_probs",
           "standardize", "to_bits"]
