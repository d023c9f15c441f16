"""The verdict on distillation itself: distil from the chosen teacher, or train on the labels alone?

    {"distil": true|false, "teacher": [epochs], "reason": "...", "evidence": {...} | null,
     "spent": distillations}

The rule reads only what selection may read (the training and validation splits; proxy data
has no test split at all). It compares proxy students distilled from the chosen teacher with
proxy students of the same architecture trained on the labels alone, the same way (the
``proxy`` policy's stage and data: ``select.proxy``), **paired over seeds**: pair j shares
the proxy seed ``select.proxy.seed + j``, hence the same initialisation and data subset, and
differs only in the teacher. With d_j = val_acc(no KD)_j - val_acc(KD)_j over m pairs,

    distil = False   iff   mean(d) - SE(d) > 0,   SE = std(d) / sqrt(m)

that is, only when no KD is ahead by more than one standard error. One SE is the same rule
``val-nll-1se`` uses to leave ``last``: the user came to distil, so the verdict departs from
distilling only on evidence beyond the noise the seeds show. m is 3 pairs (the studies'
count of student seeds) when the budget allows, else 2 (the fewest with a standard error).

Pair 0's KD proxy of a single teacher is the ``proxy`` policy's own record (the context's
``select.proxy``, seed + 0): when that policy picked the teacher it has trained it already,
and the verdict neither spends nor counts it again (``reused_by``); its ``spent`` is what it
adds to the policy's spend, so the two together are what was trained.

Without that evidence (no context: a ``select`` policy of the epochs alone; no student
settings, no validation split, under torchrun, or a budget that does not cover two pairs) the
verdict is "distil", and the reason says that no KD was not compared and what would compare
it: no verdict against distillation is ever invented.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Sequence

from ..config import KDConfig
from ..trajectory import Checkpoint
from .budget import PRECISION, rounded

if TYPE_CHECKING:
    from .context import SelectionContext

MAX_PAIRS, MIN_PAIRS = 3, 2
PAIR_0_POLICY = "proxy"  # scores every candidate with ctx.proxy(c) under ctx.proxy_cfg: pair 0's KD proxy


def _not_compared(teacher: list[int], why: str, fix: str) -> dict:
    return {"distil": True, "teacher": teacher, "reason": f"distil: no KD was not compared ({why}); {fix}",
            "evidence": None, "spent": 0.0}


def pair_cost(ckpts: Sequence[Checkpoint], ctx: "SelectionContext") -> float:
    """One pair's cost in full distillations: two proxy students (KD and no KD)."""
    from .policies.proxy import proxy_spend

    return 2 * proxy_spend(ckpts[:1], ctx, ctx.proxy_cfg, "").distillations


def reused_by(parts: Sequence[str], chosen: Sequence[Checkpoint]) -> bool:
    """Whether the policy of ``parts`` (a union's parts, or one policy) that picked ``chosen``
    has trained pair 0's KD proxy already: ``proxy`` distils one proxy from every candidate,
    so from a single chosen checkpoint too (an ensemble's KD proxy is the verdict's own)."""
    return len(chosen) == 1 and PAIR_0_POLICY in parts


def verdict_spend(pairs: int, cost: float, reused: bool) -> float:
    """What ``pairs`` pairs of ``cost`` each add to the selection's spend: one KD proxy less
    when the policy trained pair 0's."""
    return pairs * cost - (cost / 2 if reused and pairs > 0 else 0.0)


def pairs_to_train(ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None",
                   spent: float = 0.0, reused: bool = False) -> tuple[int, tuple[str, str] | None]:
    """How many proxy pairs the verdict will train for a pick among ``ckpts`` (a pair costs the
    same whichever checkpoint teaches), or 0 and (why not, what would compare it); ``reused``:
    the policy trained pair 0's KD proxy (``reused_by``). Known before anything is spent, so
    that ``select`` can refuse a flag that would set nothing."""
    from .. import parallel

    if ctx is None:  # ckptkd select under last, halfway or explicit: no data is loaded
        return 0, ("selection read no data: its policy scores the checkpoints' epochs alone", "choose a policy "
                   "that reads the data (e.g. val-nll-1se) and give a student section in --config or --student-model "
                   "to compare it")
    if ctx.student is None:
        return 0, ("selection has no student settings", "give a student section in --config or --student-model "
                   "to compare it")
    if len(ctx.data.y_val) == 0:
        return 0, ("there is no validation split", "set data.val_fraction > 0 to compare it")
    if parallel.world().distributed:
        return 0, ("proxy students do not run under torchrun", "run ckptkd select in one process to compare it")
    left = ctx.budget - spent
    cost = pair_cost(ckpts, ctx)
    kept = cost / 2 if reused else 0.0  # the policy's KD proxy of pair 0 costs nothing more
    pairs = min(MAX_PAIRS, int((left + kept + PRECISION / 2) // cost)) if cost > 0 else MAX_PAIRS
    if pairs < MIN_PAIRS:
        two = verdict_spend(MIN_PAIRS, cost, reused)
        return 0, (f"{MIN_PAIRS} paired proxy seeds would spend {two:.2f} distillations and the budget leaves "
                   f"{max(0.0, left):.2f}", f"raise --budget to {rounded(spent + two):.2f} or more to compare it")
    return pairs, None


def recommend(chosen: Sequence[Checkpoint], ctx: "SelectionContext | None", spent: float = 0.0,
              parts: Sequence[str] = ()) -> dict:
    """The verdict for the teacher ``chosen``, spending at most the context's budget less
    ``spent`` (what the selection itself declared); ``parts``: the policy that picked it (a
    union's parts), whose own proxy students are not counted again. The result's ``spent`` is
    what the verdict adds."""
    teacher = [c.epoch for c in chosen]
    reused = reused_by(parts, chosen)
    pairs, why_not = pairs_to_train(chosen, ctx, spent, reused)
    if why_not is not None:
        return _not_compared(teacher, *why_not)
    kd_acc, nokd_acc = [], []
    for j in range(pairs):
        cfg = dataclasses.replace(ctx.proxy_cfg, seed=ctx.proxy_cfg.seed + j)
        kd_acc.append(kd_proxy(chosen, ctx, cfg)["val_acc"])
        nokd_acc.append(nokd_proxy(ctx, cfg)["val_acc"])
    return judge(teacher, kd_acc, nokd_acc, verdict_spend(pairs, pair_cost(chosen, ctx), reused))


def judge(teacher: list[int], kd_acc: Sequence[float], nokd_acc: Sequence[float], spent: float) -> dict:
    """The rule above, on paired validation accuracies (fractions) of the two kinds of proxy."""
    d = [b - a for a, b in zip(kd_acc, nokd_acc)]
    m = len(d)
    mean = sum(d) / m
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (m - 1) / m) if m > 1 else 0.0
    distil = not (mean - se > 0)
    margin = f"{100 * abs(mean):.2f} ± {100 * se:.2f} points of proxy validation accuracy (paired over {m} seeds)"
    if not distil:
        reason = (f"do not distil: a proxy student trained on the labels alone beats the teacher's proxy students by "
                  f"{margin}, more than one standard error; train the student without KD, or try a lower kd.alpha")
    elif abs(mean) <= se:
        reason = f"distil: the teacher's proxy students and no KD are tied within the noise ({margin})"
    else:
        reason = f"distil: the teacher's proxy students are {'ahead of' if mean < 0 else 'behind'} no KD by {margin}"
    return {"distil": distil, "teacher": teacher, "reason": reason, "spent": spent,
            "evidence": {"pairs": m, "kd_val_acc": list(kd_acc), "nokd_val_acc": list(nokd_acc), "d": mean, "se": se}}


def kd_proxy(chosen: Sequence[Checkpoint], ctx: "SelectionContext", cfg) -> dict:
    """A proxy student distilled from ``chosen`` (one checkpoint: the ``proxy`` policy's own
    cached record, so a proxy the policy trained is not trained again)."""
    if len(chosen) == 1:
        return ctx.proxy(chosen[0], cfg, who="the distillation verdict")
    from ..distill import distill, method_key
    from ..io import sha256_file
    from ..teacher import Teacher
    from .context import proxy_data, proxy_stage

    stage, kd = proxy_stage(ctx.student, cfg), ctx.kd or KDConfig()
    identity = [[c.sha256 or sha256_file(c.path) for c in chosen], [c.model for c in chosen]]
    settings = {"stage": dataclasses.asdict(stage), "kd": method_key(kd), "proxy": dataclasses.asdict(cfg),
                "seed": ctx.seed}

    def compute() -> dict:
        data = proxy_data(ctx.data, cfg)
        teacher = Teacher.from_checkpoints(list(chosen), data.num_classes, data.in_shape, kd.combine)
        _, rec = distill(data, stage, teacher, kd, seed=ctx.seed + cfg.seed, device=ctx.device, run=None,
                         progress=False)
        return {"val_acc": rec["val_acc"], "model": stage.model, "epochs": stage.epochs, "n_train": len(data.y_train),
                "proxy_seed": cfg.seed}

    return ctx.cached_record("proxy-ensemble", identity, settings, compute)


def nokd_proxy(ctx: "SelectionContext", cfg) -> dict:
    """A proxy student of the same stage, data and seed trained on the labels alone."""
    from ..train import train
    from .context import proxy_data, proxy_stage

    stage = proxy_stage(ctx.student, cfg)
    settings = {"stage": dataclasses.asdict(stage), "proxy": dataclasses.asdict(cfg), "seed": ctx.seed}

    def compute() -> dict:
        data = proxy_data(ctx.data, cfg)
        _, rec = train(data, stage, seed=ctx.seed + cfg.seed, device=ctx.device, run=None, progress=False)
        return {"val_acc": rec["val_acc"], "model": stage.model, "epochs": stage.epochs, "n_train": len(data.y_train),
                "proxy_seed": cfg.seed}

    return ctx.cached_record("proxy-nokd", ["no teacher"], settings, compute)
