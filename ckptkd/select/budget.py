"""The selection budget: what choosing a teacher may spend, counted in full distillations.

One full distillation is the real student's training: ``student.epochs`` passes over the
training split. A proxy student of ``e`` epochs on ``s`` of the ``N`` training samples costs
``e / student.epochs x s / N`` of one, whatever its architecture (the count is of sample
passes, which is what a user pays for on a fixed model). Forward passes of the checkpoints
(probes: the validation pass, the information probe, the training-set pass) count as 0:
``--budget 0`` means probes only.

Every policy declares its spend before anything is computed (``Policy.spend``); one that
would spend more than the budget is refused with one line naming the cost and the fix,
never cut silently. Costs are compared at the precision they are printed, 0.01
distillation: ``proxy-full``'s 1/n share of the data is rounded to whole samples, which can
put it a few samples over one distillation, and that is not what a budget of 1 is for.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..config import check_budget_value  # noqa: F401  (one check for configs, flags and the API)
from ..errors import CkptkdError
from ..trajectory import Checkpoint
from .base import Spend, get_policy

if TYPE_CHECKING:
    from ..config import ProxyConfig
    from .context import SelectionContext

DEFAULT_BUDGET = 1.0
PRECISION = 0.01  # distillations; costs are compared (and printed) at this precision


def rounded(distillations: float) -> float:
    return round(distillations / PRECISION) * PRECISION


def spend_of(parts: Sequence[str], ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None") -> Spend:
    """What the policies ``parts`` (a union's parts, or one policy) declare together."""
    spends = [(p, get_policy(p).spend(ckpts, ctx)) for p in parts if not get_policy(p).takes_epochs]
    total = sum(s.distillations for _, s in spends)
    how = "; ".join(f"{p}: {s.how}" if len(spends) > 1 else s.how for p, s in spends if s.distillations > 0)
    cheaper = "; ".join(s.cheaper for _, s in spends if s.distillations > 0 and s.cheaper)
    return Spend(total, how, cheaper)


def check_budget(parts: Sequence[str], ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None",
                 budget: float | None = None) -> Spend:
    """Refuse, before anything is spent, a selection that would spend more than ``budget``
    (default: the context's); returns what it will spend. The fix names the context's
    ``budget_key`` (``select.budget`` for select and run, a study's top-level ``budget``)."""
    budget = getattr(ctx, "budget", DEFAULT_BUDGET) if budget is None else budget
    need = spend_of(parts, ckpts, ctx)
    if rounded(need.distillations) > rounded(budget) + 1e-9:
        name = "policy " + "+".join(parts) if len(parts) == 1 else "policies " + "+".join(parts)
        fix = f"raise --budget ({getattr(ctx, 'budget_key', 'select.budget')}) to {need.distillations:.2f} or more"
        raise CkptkdError(f"{name} would spend {need.distillations:.2f} distillations ({need.how}) and the budget is "
                          f"{budget:.2f}; {fix}" + (f", or {need.cheaper}" if need.cheaper else ""))
    return need


def proxy_for_budget(budget: float, n_candidates: int, student_epochs: int, n_train: int, n_classes: int,
                     base: "ProxyConfig") -> "ProxyConfig":
    """``base`` with its fractions set so that policy ``proxy`` on ``n_candidates`` spends at
    most ``budget`` distillations, as near to it as whole epochs and whole samples allow (a
    study's ``budget_sweep``).

    The epochs go first: ``epoch_fraction`` = budget / n / ``data_fraction``, rounded down to
    whole student epochs (``proxy_stage`` rounds to whole epochs, and rounding up would spend
    more than the budget) and capped at all of them. When one epoch per candidate already costs
    more, each proxy keeps one epoch and trains on fewer samples instead. Refused (one line)
    when even that leaves fewer samples than classes, and at budget 0: a proxy cannot train
    for free."""
    import dataclasses
    import math

    if budget <= 0:
        raise CkptkdError("policy proxy cannot spend 0 distillations: it trains a proxy student per candidate "
                          "(budget 0 is what the probe-only policies measure); leave 0 out of budget_sweep")
    share = budget / max(1, n_candidates)  # of one distillation, for each candidate's proxy student
    epochs = min(student_epochs, math.floor(share * student_epochs / base.data_fraction + 1e-9))
    if epochs >= 1:
        return dataclasses.replace(base, epoch_fraction=epochs / student_epochs)
    samples = math.floor(share * student_epochs * n_train + 1e-9)  # one epoch, on fewer samples
    if samples < n_classes:
        least = n_candidates * n_classes / (student_epochs * n_train)
        raise CkptkdError(f"policy proxy cannot spend only {budget:g} distillations on {n_candidates} candidates: "
                          f"one epoch on one sample per class costs {least:.3f}; raise the budget_sweep value")
    return dataclasses.replace(base, epoch_fraction=1.0 / student_epochs, data_fraction=samples / n_train)
