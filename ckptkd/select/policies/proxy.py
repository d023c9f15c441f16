"""Policy ``proxy``: ask a short distillation which checkpoint teaches best."""
from __future__ import annotations

from ..base import Policy, register


@register
class Proxy(Policy):
    """Distil a proxy student from every candidate for a fraction of the student's epochs (and
    optionally of the data), and pick the teacher whose proxy student is most accurate on the
    validation split.

    It measures the thing itself, the student's held-out accuracy, at a fraction of the
    cost, and it knows the student's capacity (Cho & Hariharan's gap) where no property of
    the teacher alone does. It is biased: harm from a memorising teacher can appear only
    late in a student's training, after the proxy has stopped (see docs/selection.md).
    Cost: (number of checkpoints) x epoch_fraction x data_fraction of one distillation.
    """

    name, needs = "proxy", ("proxy", "val")
    summary = "a short proxy distillation per checkpoint, scored by the proxy student's val accuracy"

    def scores(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        return [ctx.proxy(c)["val_acc"] for c in ckpts]

    def cost_s(self, ckpts, ctx):
        return sum(ctx.proxy(c)["wall_s"] for c in ckpts)
