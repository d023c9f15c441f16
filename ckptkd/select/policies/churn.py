"""Policy ``label-wave``: the onset of memorisation, from prediction churn on the training set.

Reads every checkpoint's outputs on the training inputs (``ctx.train_outputs``) and the
order of the trajectory; no labels, no validation split, no test split.
"""
from __future__ import annotations

import math

import torch

from ..base import Policy, register
from ..trainset import require_trajectory


def churn_rates(predictions: list[torch.Tensor], epochs: list[int]) -> list[tuple[float, float]]:
    """Per step s between neighbouring checkpoints s and s+1 (s = 0 .. n-2): the number of
    training samples whose predicted class changed, per epoch of the step, and that rate's
    counting error (a count c has Poisson error sqrt(c), so c / dt has sqrt(c) / dt)."""
    out = []
    for j in range(1, len(predictions)):
        changed = float((predictions[j] != predictions[j - 1]).sum())
        dt = max(1, epochs[j] - epochs[j - 1])
        out.append((changed / dt, math.sqrt(changed) / dt))
    return out


def onset_index(rates: list[tuple[float, float]]) -> int:
    """The index of the checkpoint at the first local minimum of the churn: for the first step s
    after which the churn rate rises by more than one standard error of the difference,
    sqrt(se_s^2 + se_s+1^2), checkpoint s+1, where the quiet step s ends and the rise begins.
    No such rise: the last checkpoint."""
    for s in range(len(rates) - 1):
        (r, se), (r_next, se_next) = rates[s], rates[s + 1]
        if r_next - r > math.hypot(se, se_next):
            return s + 1
    return len(rates)


@register
class LabelWave(Policy):
    """The checkpoint where the training set's prediction churn first turns up.

    Yuan, Feng & Liu ("Early stopping against label noise without validation data", ICLR
    2025, arXiv 2502.07551; the "Label Wave") track how many training samples change their
    predicted class from one epoch to the next: the count falls while the network learns the
    clean patterns, and rises again when it starts fitting the mislabelled samples, which
    flip back and forth before they are memorised; the first local minimum is their stopping
    point, found without validation data. Forgetting events (Toneva et al., ICLR 2019) are the
    per-sample side of the same churn. Here the churn is measured between neighbouring saved
    checkpoints, per epoch between them, instead of between epochs (a trajectory keeps only
    its checkpoints), and not smoothed with a moving average (a trajectory of ten checkpoints
    has no window to spare). What counts as a rise is fixed on principle: more than one
    standard error of the difference of the two rates, each a count with Poisson error
    sqrt(count), the one-SE rule of ``val-nll-1se``. With no such rise (clean data, whose
    churn only settles) the pick is the last checkpoint.

    Score: minus the distance, in checkpoints, from the onset (``top_k`` gives ties to the
    later neighbour). Needs at least 3 checkpoints, the fewest with two steps to compare.
    Measured in docs/selection.md.
    """

    name, needs = "label-wave", ("train",)
    summary = "the first local minimum of prediction churn on the training set (Label Wave), else the last"

    def onset(self, ckpts, ctx) -> int:
        require_trajectory(ckpts, f"policy {self.name}")
        predictions = [ctx.train_outputs(c)["logits"].argmax(1) for c in ckpts]
        return onset_index(churn_rates(predictions, [c.epoch for c in ckpts]))

    def scores(self, ckpts, ctx):
        at = self.onset(ckpts, ctx)
        return [-float(abs(i - at)) for i in range(len(ckpts))]

    def cost_s(self, ckpts, ctx):
        return sum(ctx.train_outputs(c)["wall_s"] for c in ckpts)
