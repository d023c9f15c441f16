"""Policies that read the teacher's predictions on the validation split."""
from __future__ import annotations

import math

import torch

from ..base import Policy, register


class _ValPolicy(Policy):
    needs = ("val",)
    key = ""

    def scores(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        return [self.score(ctx.val_metrics(c)) for c in ckpts]

    def score(self, metrics: dict) -> float:
        raise NotImplementedError

    def cost_s(self, ckpts, ctx):
        return sum(ctx.val_metrics(c)["wall_s"] for c in ckpts)


class _NLLEvidence:
    """Per-sample validation NLLs (after temperature scaling) as the evidence behind the pick."""

    def evidence(self, ckpts, ctx):
        from ..confidence import Evidence

        ctx.require_val(f"policy {self.name}")
        values = [-torch.tensor(ctx.val_metrics(c)["nll_ts_samples"], dtype=torch.float64) for c in ckpts]
        return Evidence(values, "nats of validation NLL", "validation samples")


@register
class BestVal(_ValPolicy):
    """Early stopping's choice: the most accurate teacher on held-out data.

    Cho & Hariharan (ICCV 2019) found early-stopped teachers teach better than fully trained
    ones; held-out accuracy is the usual stopping signal, and under label noise it falls
    when the teacher starts memorising the flipped labels, which is when it stops being a
    good teacher. It reads only held-out labels, so memorisation cannot inflate it.
    """

    name, summary = "best-val", "the teacher's validation accuracy (early stopping's choice)"

    def score(self, metrics):
        return metrics["val_acc"]


@register
class ValNLL(_NLLEvidence, _ValPolicy):
    """The quality of the teacher's probabilities, not its argmax.

    What a student learns from is the teacher's distribution: Menon et al. (ICML 2021) show
    that a teacher helps by approximating the Bayes class-probabilities, so its held-out
    log-loss (which measures exactly that) should rank teachers better than accuracy. KD
    re-softens the teacher at its own temperature, so a teacher is not judged on its
    over-confidence: the NLL is taken after fitting one temperature on the validation split,
    as Ashukha et al. (ICLR 2020) require for a fair comparison of NLLs.
    """

    name, summary = "val-nll", "minus the teacher's validation NLL after temperature scaling on val"

    def score(self, metrics):
        return -metrics["val_nll_ts"]


@register
class ValNLL1SE(_NLLEvidence, _ValPolicy):
    """``val-nll`` that does not rank what the validation split cannot tell apart.

    A validation split of a few hundred samples measures each checkpoint's NLL with a
    sampling error, and on a flat stretch of the trajectory the argmin is decided by that
    error alone. The one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani &
    Friedman, ESL 2nd ed., section 7.10) treats a checkpoint whose NLL exceeds the best one's
    by less than the standard error of that difference as tied with it; ties go to the later
    checkpoint, the one a user would distil from without ckptkd. The difference and its
    standard error are paired over the validation samples (the same samples score every
    checkpoint): for per-sample NLLs a_j (this checkpoint) and b_j (the best),
    d = mean(a - b) and SE = std(a - b) / sqrt(n). Score: -max(0, d - SE).
    """

    name = "val-nll-1se"
    summary = "val-nll, with checkpoints within one standard error of the best tied and ties to the later"

    def scores(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        return [-max(0.0, d - se) for d, se in nll_margins(ckpts, ctx)]


def nll_margins(ckpts, ctx) -> list[tuple[float, float]]:
    """(d, SE) of every checkpoint: the paired mean difference of its per-sample validation NLLs
    (after temperature scaling) to those of the checkpoint with the lowest mean, and the
    standard error of that difference, std / sqrt(n). What ``val-nll-1se`` reads."""
    per = [torch.tensor(ctx.val_metrics(c)["nll_ts_samples"], dtype=torch.float64) for c in ckpts]
    best = min(range(len(per)), key=lambda i: float(per[i].mean()))
    out = []
    for p in per:
        d = p - per[best]
        out.append((float(d.mean()), float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else 0.0))
    return out
