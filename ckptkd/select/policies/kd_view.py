"""Policies ``kd-nll-1se`` and ``kd-nll-knn``: the teacher judged as the student will see it.

A student is taught softmax(z / T) at the KD temperature T (``kd.temperature``), not the
teacher's outputs at the temperature that fits the validation split best. These policies read
the validation NLL of that very distribution; ``kd-nll-knn`` also reads the training-set
outputs and the training labels (``neighbour_band``). Neither reads the test split.
"""
from __future__ import annotations

import torch

from ..base import register
from .neighbour_band import BandPolicy, one_se_band


def kd_margins(ckpts, ctx) -> list[tuple[float, float]]:
    """(d, SE) of every checkpoint's per-sample validation NLL at the KD temperature, against
    the checkpoint with the lowest mean, paired over the validation samples."""
    t = ctx.kd_temperature()
    per = [torch.tensor(ctx.val_nll_at(c, t)["nll_samples"], dtype=torch.float64) for c in ckpts]
    return one_se_band(per)


class _KDView:
    def margins(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        return kd_margins(ckpts, ctx)

    def val_cost_s(self, ckpts, ctx):
        t = ctx.kd_temperature()
        return sum(ctx.val_nll_at(c, t)["wall_s"] for c in ckpts)


@register
class KDNLL1SE(_KDView, BandPolicy):
    """Validation NLL at the KD temperature, with the one-SE band of ties and ties to the later.

    Temperature scaling (``val-nll``) judges each teacher at the temperature that suits it,
    which a student never sees: it is taught softmax(z / T) at the one KD temperature. An
    under-confident checkpoint, sharpened by its own fitted temperature, can score the best
    validation NLL and still teach little, because at T its targets are nearly flat; that is
    how ``val-nll-1se`` picked epoch 9 of mnist1d-noisy on the dev round (its student 11
    points below the last's). Here the NLL is of the distribution the student is taught (the
    held-out quality of the targets, Menon et al., ICML 2021), and what the split cannot tell
    apart (one SE, paired) goes to the later checkpoint, as in ``val-nll-1se``. No parameter:
    T is the user's. Cost: one validation pass per checkpoint; 0 distillations.
    """

    name, needs = "kd-nll-1se", ("val",)
    summary = "validation NLL of softmax(z / kd.temperature), what the student is taught; 1-SE ties to the later"

    def scores(self, ckpts, ctx):
        return [-max(0.0, d - se) for d, se in self.margins(ckpts, ctx)]

    def cost_s(self, ckpts, ctx):
        return self.val_cost_s(ckpts, ctx)

    def evidence(self, ckpts, ctx):
        from ..confidence import Evidence

        t = ctx.kd_temperature()
        values = [-torch.tensor(ctx.val_nll_at(c, t)["nll_samples"], dtype=torch.float64) for c in ckpts]
        return Evidence(values, f"nats of validation NLL at the KD temperature {t:g}", "validation samples")


@register
class KDNLLNeighbours(_KDView, BandPolicy):
    """``kd-nll-1se``'s band, its ties broken by training-set agreement with the neighbours' labels.

    The band is ``kd-nll-1se``'s (the held-out quality of what the student is taught); within
    it, the checkpoint whose training-set predictions agree best with the label most of each
    training sample's k = ceil(sqrt(N)) neighbours carry, one SE tied and ties to the later,
    exactly as in ``val-nll-knn`` (see there for the vote and why it only breaks ties). At the
    KD temperature a memorising teacher stays sharp and its held-out NLL need not rise, so the
    band can hold both it and an earlier teacher; the vote is what tells them apart on the
    training inputs, where the memorised labels are. Cost: a validation pass, the training-set
    pass and one neighbour search; 0 distillations.
    """

    name = "kd-nll-knn"
    summary = "kd-nll-1se's band of ties, broken by training-set agreement with the neighbours' labels"

    def cost_s(self, ckpts, ctx):
        return super().cost_s(ckpts, ctx) + self.val_cost_s(ckpts, ctx)
