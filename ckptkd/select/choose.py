"""``choose``: the checkpoints a policy (or a union ``a+b`` of policies) picks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from ..config import SelectConfig, check, checks
from ..errors import CkptkdError, closest
from ..trajectory import Checkpoint
from .base import POLICIES, get_policy
from .picks import by_epochs, check_k, top_k

if TYPE_CHECKING:
    from .context import SelectionContext

Scores = Sequence[float] | Mapping[str, Sequence[float]]


def parse_policy(spec: str, *, k: int = 1, epochs: Sequence[int] = ()) -> list[str]:
    """The parts of ``spec`` (``"mi"`` -> ["mi"], ``"halfway+last"`` -> ["halfway", "last"]),
    refusing what has no single meaning."""
    parts = spec.split("+")
    for part in parts:
        get_policy(part)
    if len(set(parts)) != len(parts):
        twice = next(p for p in parts if parts.count(p) > 1)
        raise CkptkdError(f"policy {spec!r} names {twice!r} twice; a union needs distinct policies")
    if "explicit" in parts:
        if not epochs:
            raise CkptkdError("policy explicit needs the epochs to use (select.checkpoints, or --checkpoints E ...)")
        if len(parts) > 1 and k > 1:
            raise CkptkdError(f"policy {spec!r} with k={k} is ambiguous: explicit gives its epochs whatever k is; "
                              "use k=1, or list every epoch under explicit")
    return parts


@checks(SelectConfig)
def _check_policy_names(cfg: SelectConfig) -> None:
    """``select.policy`` names registered policies, and means one thing (``parse_policy``)."""
    for part in cfg.policy.split("+"):
        check(part in POLICIES, f"select.policy must be one of {', '.join(POLICIES)} (or a+b), "
                                f"got {cfg.policy!r}{closest(part, POLICIES)}")
    check("explicit" not in cfg.policy.split("+") or cfg.checkpoints,
          "select.policy explicit needs select.checkpoints (a list of epochs)")
    parse_policy(cfg.policy, k=cfg.k, epochs=cfg.checkpoints)


def policy_scores(name: str, ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None" = None) -> list[float]:
    """One score per checkpoint under the single policy ``name`` (higher = better); refused
    before anything is spent when it would spend more than the context's budget."""
    from .budget import check_budget

    policy = get_policy(name)
    if ctx is None and policy.needs:
        raise CkptkdError(f"policy {name} needs a SelectionContext (its inputs: {', '.join(policy.needs)})")
    check_budget([name], ckpts, ctx)
    scores = [float(s) for s in policy.scores(ckpts, ctx)]
    if len(scores) != len(ckpts):
        raise ValueError(f"policy {name} gave {len(scores)} scores for {len(ckpts)} checkpoints")
    return scores


def choose(policy: str, ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None" = None, *, k: int = 1,
           min_spacing: int = 0, epochs: Sequence[int] = (), scores: Scores | None = None) -> list[Checkpoint]:
    """The teacher checkpoints that ``policy`` picks, in epoch order.

    Every registered policy's scores go through ``top_k``, so ``k`` and ``min_spacing`` work
    with all of them; ``explicit`` gives ``epochs`` instead. ``a+b`` is the union of what each
    part picks with the same ``k`` (``halfway+last`` gives two checkpoints at k=1). ``scores``
    passes precomputed scores: a list for a single policy (or for the one part of a union
    that needs a context), or a mapping from part to list.
    """
    if not ckpts:
        raise CkptkdError("the trajectory has no checkpoints to choose from")
    parts = parse_policy(policy, k=k, epochs=epochs)
    for part in parts:  # refuse an impossible k before any (slow) scores are computed
        if part != "explicit":
            check_k(ckpts, k, min_spacing)
    given = _given_scores(parts, scores)
    from .budget import check_budget

    check_budget([p for p in parts if p not in given], ckpts, ctx)  # a union's parts share one budget
    picks: dict[int, Checkpoint] = {}
    for part in parts:
        if part == "explicit":
            chosen = by_epochs(ckpts, epochs)
        else:
            s = given[part] if part in given else policy_scores(part, ckpts, ctx)
            chosen = top_k(ckpts, s, k, min_spacing)
        picks.update({c.epoch: c for c in chosen})
    return sorted(picks.values(), key=lambda c: c.epoch)


def _given_scores(parts: list[str], scores: Scores | None) -> dict[str, Sequence[float]]:
    if scores is None:
        return {}
    if isinstance(scores, Mapping):
        unknown = [p for p in scores if p not in parts]
        if unknown:
            raise ValueError(f"scores given for {unknown[0]!r}, which is not a part of {'+'.join(parts)!r}")
        return dict(scores)
    if len(parts) == 1:
        return {parts[0]: scores}
    needy = [p for p in parts if POLICIES[p].needs]
    if len(needy) != 1:
        raise ValueError(f"a list of scores for {'+'.join(parts)!r} is ambiguous; pass a mapping part -> scores")
    return {needy[0]: scores}
