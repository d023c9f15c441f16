"""Policy ``cl-fit``: ``aum-fit`` with confident learning's flags, which tell noisy labels from hard ones.

Reads every checkpoint's outputs on the training inputs (``ctx.train_outputs``) and the
trajectory; never the validation or the test split.
"""
from __future__ import annotations

import torch

from ..base import register
from .memorisation import AUMFit, early_checkpoints


def confident_joint(probs: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, guess): confident learning's confident joint (Northcutt, Jiang & Chuang, JAIR 2021).

    Class j's threshold t_j is the mean probability of j over the samples labelled j (the
    model's average self-confidence in that class). A sample counts towards C[label, j] for
    the most probable class j among those whose probability reaches its threshold; ``guess``
    holds that j, or -1 where no class reaches its threshold (the sample is not counted).
    """
    thresholds = torch.stack([probs[y == j, j].mean() if (y == j).any() else probs.new_tensor(1.0)
                              for j in range(num_classes)])
    above = probs >= thresholds[None, :]
    masked = torch.where(above, probs, torch.full_like(probs, -1.0))
    guess = torch.where(above.any(1), masked.argmax(1), torch.full_like(y, -1))
    joint = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counted = guess >= 0
    joint.index_put_((y[counted], guess[counted]), torch.ones(int(counted.sum()), dtype=torch.float64), accumulate=True)
    return joint, guess


def noise_rate(joint: torch.Tensor, y: torch.Tensor) -> float:
    """The estimated share of wrong labels: the off-diagonal mass of the confident joint after
    calibrating each row to the number of samples that carry its label (Northcutt et al.)."""
    counts = torch.bincount(y, minlength=joint.shape[0]).double()
    rows = joint.sum(1, keepdim=True)
    calibrated = torch.where(rows > 0, joint / rows.clamp(min=1) * counts[:, None], torch.zeros_like(joint))
    return float(1 - calibrated.trace() / counts.sum()) if counts.sum() > 0 else 0.0


def early_probabilities(ckpts, ctx) -> torch.Tensor:
    """The mean softmax of the early checkpoints (``aum-fit``'s window) on the training inputs."""
    return torch.stack([torch.softmax(ctx.train_outputs(c)["logits"].double(), 1)
                        for c in early_checkpoints(ckpts)]).mean(0)


def confident_flags(ckpts, ctx) -> tuple[torch.Tensor, float]:
    """(suspect, noise rate): samples whose confident class differs from their label, and the
    estimated noise rate, both from the early trajectory's probabilities."""
    y = ctx.data.y_train
    probs = early_probabilities(ckpts, ctx)
    joint, guess = confident_joint(probs, y, probs.shape[1])
    return (guess >= 0) & (guess != y), noise_rate(joint, y)


@register
class CLFit(AUMFit):
    """``aum-fit``'s score with the suspect labels found by confident learning.

    A negative margin flags hard samples as readily as flipped ones, and on clean but hard
    data that counts against the teacher that learns them. Confident learning (Northcutt,
    Jiang & Chuang, "Confident learning: estimating uncertainty in dataset labels", JAIR
    2021) flags a sample only when the early trajectory is *confident* of another class: its
    probability of that class reaches the class's own threshold, the average probability the
    model gives the class on the samples labelled with it. A hard sample, predicted with
    spread-out probabilities, reaches no other class's threshold and keeps its label's trust;
    a flipped one, predicted as its true class as confidently as that class's clean samples
    are, is flagged. The thresholds are CL's own, per class, with nothing to tune; the
    probabilities are the mean softmax of the early checkpoints (``aum-fit``'s window: the
    first half of training), which stand in for CL's out-of-sample predictions because the
    network has not yet memorised the flipped labels then. ``confident_flags`` also gives the
    estimated noise rate (CL's calibrated off-diagonal mass, ``noise_rate``): where it is near
    zero, few labels are flagged and the score falls back to fitting the labels, i.e. to ``last``.

    Score, ties and refusals as ``aum-fit``. Measured in docs/selection.md.
    """

    name, needs = "cl-fit", ("train",)
    summary = "aum-fit with confident learning's flags (tells hard clean samples from flipped labels)"

    def suspects(self, ckpts, ctx) -> torch.Tensor:
        return confident_flags(ckpts, ctx)[0]
