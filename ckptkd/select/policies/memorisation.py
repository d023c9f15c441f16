"""Policy ``aum-fit``: does the checkpoint teach the labels that its own early trajectory doubts?

Reads every checkpoint's outputs on the training inputs (``ctx.train_outputs``), which is
what the student learns from, and the trajectory; never the validation or the test split.
"""
from __future__ import annotations

import torch

from ..base import Policy, register
from ..trainset import label_probability, margins, one_se_scores, require_trajectory


def early_checkpoints(ckpts):
    """The early trajectory: the checkpoints of the first half of training (epoch <= half the
    final epoch), or the first checkpoint alone when none is that early."""
    early = [c for c in ckpts if c.epoch <= ckpts[-1].epoch / 2]
    return early or [ckpts[0]]


def suspect_labels(ckpts, ctx) -> torch.Tensor:
    """Training samples whose assigned label the early trajectory disagrees with: an area under
    the margin (AUM, Pleiss et al., NeurIPS 2020) below zero over the early checkpoints."""
    y = ctx.data.y_train
    aum = torch.stack([margins(ctx.train_outputs(c)["logits"], y) for c in early_checkpoints(ckpts)]).mean(0)
    return aum < 0


def target_credit(logits: torch.Tensor, y: torch.Tensor, suspect: torch.Tensor) -> torch.Tensor:
    """Per training sample, how far the checkpoint's output points the student the right way:
    the probability of the assigned label where the label is trusted, and the probability of
    anything else where it is suspect."""
    p = label_probability(logits, y)
    return torch.where(suspect, 1.0 - p, p)


@register
class AUMFit(Policy):
    """Fit to the trusted training labels, against fit to the suspect ones.

    **Flags.** A training sample is suspect when its area under the margin over the early
    trajectory is negative: averaged over the checkpoints of the first half of training, the
    logit of its assigned label is below the largest other logit (Pleiss et al., NeurIPS 2020,
    "Identifying mislabeled data using the area under the margin ranking"). Networks fit
    clean patterns before they memorise noise (Arpit et al., ICML 2017; Zhang et al., ICLR
    2017), so while training is young a flipped label is outvoted by the class the input looks
    like. Both choices are fixed on principle, not fitted: zero is the decision boundary (the
    label is, on average, not the early network's answer), where Pleiss et al. calibrate a
    threshold with extra mislabelled samples that a finished trajectory cannot add; and the
    first half of training stands for their window before the first learning-rate drop,
    which a checkpoint does not record.

    **Score.** A student learns the teacher's outputs on the training inputs. Per sample, the
    credit is p(label) where the label is trusted and 1 - p(label) where it is suspect (the
    share of the output that points away from a label the early trajectory doubts), at the
    checkpoint's own temperature 1; the score is the mean credit, the estimated share of the
    training targets that point the right way. A teacher that memorises the flipped labels
    loses the suspect credit while it gains little on the rest; on clean data few samples are
    flagged, their weight is their share, and the rule falls back to fitting the labels.
    Checkpoints whose mean credit is within one standard error (paired over the training
    samples) of the best are tied, and ties go to the later one (the one-SE rule of
    ``val-nll-1se``).

    **Known weakness.** Hard but correctly labelled samples can have a negative early AUM too;
    they are then counted against a teacher that learns them. It needs at least 3 checkpoints.
    Measured in docs/selection.md.
    """

    name, needs = "aum-fit", ("train",)
    summary = "fit to trusted training labels vs labels the early trajectory doubts (AUM < 0); 1-SE ties to later"

    def credits(self, ckpts, ctx) -> list[torch.Tensor]:
        require_trajectory(ckpts, f"policy {self.name}")
        suspect = self.suspects(ckpts, ctx)
        y = ctx.data.y_train
        return [target_credit(ctx.train_outputs(c)["logits"], y, suspect) for c in ckpts]

    def suspects(self, ckpts, ctx) -> torch.Tensor:
        """The training samples whose label the early trajectory doubts (a bool mask)."""
        return suspect_labels(ckpts, ctx)

    def scores(self, ckpts, ctx):
        return one_se_scores(self.credits(ckpts, ctx))

    def cost_s(self, ckpts, ctx):
        return sum(ctx.train_outputs(c)["wall_s"] for c in ckpts)

    def evidence(self, ckpts, ctx):
        from ..confidence import Evidence

        return Evidence(self.credits(ckpts, ctx), "points of estimated training-target correctness",
                        "training samples", scale=100.0)
