"""Policies ``proxy`` and ``proxy-full``: ask a proxy distillation which checkpoint teaches best."""
from __future__ import annotations

import dataclasses

from ...errors import CkptkdError
from ..base import Policy, Spend, register


def proxy_spend(ckpts, ctx, cfg, cheaper: str) -> Spend:
    """The proxy students' cost in full distillations: per candidate, the proxy's share of the
    student's epochs times its share of the training samples (as ``proxy_stage`` and
    ``proxy_data`` will make them), summed over the candidates."""
    from ...info.analyze import probe_indices
    from ..context import proxy_stage

    if ctx is None or ctx.student is None:
        return Spend(0.0)  # scores() refuses with the reason; nothing will be trained
    n_train = len(ctx.data.y_train)
    stage = proxy_stage(ctx.student, cfg)
    samples = n_train if cfg.data_fraction >= 1 else len(probe_indices(
        ctx.data.y_train, max(2, round(cfg.data_fraction * n_train)), cfg.seed))
    epochs, share = stage.epochs / ctx.student.epochs, samples / max(1, n_train)
    how = (f"{len(ckpts)} candidates x {epochs:.2f} of the student's epochs x {share:.2f} of its training data")
    return Spend(len(ckpts) * epochs * share, how, cheaper)


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

    def spend(self, ckpts, ctx):
        return proxy_spend(ckpts, ctx, ctx.proxy_cfg if ctx is not None else None,
                           "lower select.proxy.epoch_fraction or select.proxy.data_fraction, or save fewer checkpoints")


@register
class ProxyFull(Policy):
    """``proxy`` without its known bias: every proxy student trains for all of the student's
    epochs, on 1/n of the training data for n candidates, so the whole policy costs about one
    distillation's worth of sample passes.

    A short proxy stops before a student has fitted its teacher's outputs on the training
    inputs, which is where a memorising teacher does its harm; the notes and the studies
    (docs/selection.md) found short proxies preferring late, memorising teachers. Here each
    training target is seen as often as in the real distillation, and the data are cut
    instead of the epochs (the same class-stratified subset for every candidate, seeded by
    ``proxy.seed``; ``proxy.model`` and ``proxy.seed`` apply, the two fractions do not).
    Its own bias: a student trained on a tenth of the data may prefer another teacher than
    one trained on all of it. Score: the proxy student's validation accuracy.
    """

    name, needs = "proxy-full", ("proxy", "val")
    summary = "proxy students of full length on 1/n of the data (n candidates), scored by val accuracy"

    def config(self, ckpts, ctx):
        n_train, n_classes = len(ctx.data.y_train), ctx.data.num_classes
        if n_train < len(ckpts) * n_classes:
            raise CkptkdError(f"policy {self.name} gives each of the {len(ckpts)} candidates 1/{len(ckpts)} of the "
                              f"{n_train} training samples, fewer than one per class; save fewer checkpoints "
                              "(a larger save_every) or use policy proxy")
        return dataclasses.replace(ctx.proxy_cfg, epoch_fraction=1.0, data_fraction=1.0 / max(1, len(ckpts)))

    def scores(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        cfg = self.config(ckpts, ctx)
        return [ctx.proxy(c, cfg, who=f"policy {self.name}")["val_acc"] for c in ckpts]

    def cost_s(self, ckpts, ctx):
        cfg = self.config(ckpts, ctx)
        return sum(ctx.proxy(c, cfg, who=f"policy {self.name}")["wall_s"] for c in ckpts)

    def spend(self, ckpts, ctx):
        if ctx is None or ctx.student is None:
            return Spend(0.0)
        return proxy_spend(ckpts, ctx, self.config(ckpts, ctx), "use a policy that trains no proxy "
                           "(e.g. val-nll-1se): proxy-full costs about one distillation however many candidates")
