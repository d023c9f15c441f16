"""Policies from information estimates: the paper's Algorithm 1 and variants of it.

Each reads ``ctx.analysis`` (``ckptkd.info.analyze``) with the context's ``InfoConfig``
(estimator, features, probe size); the probe is drawn from the split each policy names.
"""
from __future__ import annotations

from ..base import Policy, register


class _InfoPolicy(Policy):
    needs = ("analysis",)
    split = "train"
    key = "score"

    def scores(self, ckpts, ctx):
        if self.split == "val":
            ctx.require_val(f"policy {self.name}")
        return [r[self.key] for r in ctx.analysis(ckpts, split=self.split)]

    def cost_s(self, ckpts, ctx):
        return sum(r.get("wall_s") or 0.0 for r in ctx.analysis(ckpts, split=self.split))


@register
class MI(_InfoPolicy):
    """Algorithm 1 of Wang et al. (NeurIPS 2022), unchanged: minmax-normalised I(X;F) + I(Y;F)
    on a probe of training inputs and labels.

    The paper's argument: a good teacher's features keep much of the input (I(X;F), which
    training compresses away late) while already knowing the label (I(Y;F)), so the sum
    peaks at an intermediate checkpoint.
    """

    name, summary = "mi", "Algorithm 1 (Wang et al. 2022): normalised I(X;F) + I(Y;F) on a training probe"


@register
class MIVal(_InfoPolicy):
    """Algorithm 1's score with the probe drawn from the validation split.

    On training inputs, a teacher that memorises keeps separating the samples it has seen,
    noisy labels included, so I(X;F) on them rises monotonically and pushes the pick late
    (issue 10 measured a regret of 4.7 points that way). On inputs it never saw,
    memorisation buys nothing: the features of held-out samples are only as informative as
    what generalises, so the same score should stop rewarding it.
    """

    name, summary, split = "mi-val", "Algorithm 1's score on a probe from the validation split", "val"


@register
class IYF(_InfoPolicy):
    """I(Y;F) alone, on the training probe.

    Drops the I(X;F) term that memorisation inflates; what is left measures how well the
    features separate the classes. On clean labels that rises with the teacher's quality.
    With noisy training labels it still rewards fitting them, which ``iyf-val`` avoids.
    """

    name, summary, key = "iyf", "I(Y;F) alone on the training probe", "iyf"


@register
class IYFVal(_InfoPolicy):
    """I(Y;F) alone on the validation split: how much the features of unseen inputs say
    about their labels, a smooth, label-aware relative of validation accuracy that credits
    separable features even where the argmax is wrong."""

    name, summary, key, split = "iyf-val", "I(Y;F) alone on a probe from the validation split", "iyf", "val"
