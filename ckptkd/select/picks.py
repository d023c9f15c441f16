"""From scores to picks: one checkpoint, or a snapshot ensemble of ``k`` spaced ones."""
from __future__ import annotations

from typing import Sequence

from ..errors import CkptkdError
from ..trajectory import Checkpoint


def last(ckpts: Sequence[Checkpoint]) -> Checkpoint:
    return ckpts[-1]


def halfway(ckpts: Sequence[Checkpoint]) -> Checkpoint:
    """The checkpoint nearest half the final epoch (the earlier one on a tie)."""
    epoch = halfway_epoch([c.epoch for c in ckpts])
    return next(c for c in ckpts if c.epoch == epoch)


def halfway_epoch(epochs: Sequence[int]) -> int:
    """Of ``epochs`` (in order), the one nearest half the last (the earlier one on a tie)."""
    return min(epochs, key=lambda e: (abs(e - epochs[-1] / 2), e))


def by_epochs(ckpts: Sequence[Checkpoint], epochs: Sequence[int]) -> list[Checkpoint]:
    found = {c.epoch: c for c in ckpts}
    missing = [e for e in epochs if e not in found]
    if missing:
        raise CkptkdError(f"no checkpoint at epoch {missing[0]}; the trajectory has epochs {sorted(found)}")
    return sorted({e: found[e] for e in epochs}.values(), key=lambda c: c.epoch)


def max_picks(ckpts: Sequence[Checkpoint], min_spacing: int = 0) -> int:
    """The most checkpoints that can be at least ``min_spacing`` epochs apart (earliest-first greedy)."""
    count, last_epoch = 0, None
    for c in sorted(ckpts, key=lambda c: c.epoch):
        if last_epoch is None or c.epoch - last_epoch >= max(min_spacing, 1):
            count, last_epoch = count + 1, c.epoch
    return count


def check_k(ckpts: Sequence[Checkpoint], k: int, min_spacing: int = 0) -> None:
    """Refuse a snapshot ensemble that no scores could fill, before any scores are computed."""
    if k < 1:
        raise CkptkdError(f"k must be at least 1, got {k}")
    most = max_picks(ckpts, min_spacing)
    if k > most:
        apart = f" at least {min_spacing} epochs apart" if min_spacing > 1 else ""
        raise CkptkdError(f"cannot pick {k} checkpoints{apart}: the trajectory allows at most {most}; "
                          "lower -k or --min-spacing")


def top_k(ckpts: Sequence[Checkpoint], scores: Sequence[float], k: int = 1, min_spacing: int = 0) -> list[Checkpoint]:
    """Greedy: highest score first (the later epoch on a tie), skipping checkpoints within
    ``min_spacing`` epochs of a pick, and skipping any pick after which ``k`` spaced
    checkpoints could no longer be filled (e.g. the middle one of three when two must be two
    epochs apart)."""
    if len(scores) != len(ckpts):
        raise ValueError(f"{len(scores)} scores for {len(ckpts)} checkpoints")
    check_k(ckpts, k, min_spacing)
    gap = max(min_spacing, 1)

    def spaced(c: Checkpoint, picks: list[Checkpoint]) -> bool:
        return all(abs(c.epoch - p.epoch) >= gap for p in picks)

    picked: list[Checkpoint] = []
    for score, c in sorted(zip(scores, ckpts), key=lambda sc: (-sc[0], -sc[1].epoch)):
        trial = picked + [c]
        if spaced(c, picked) and len(trial) + max_picks([d for d in ckpts if spaced(d, trial)], min_spacing) >= k:
            picked = trial
        if len(picked) == k:
            break
    return sorted(picked, key=lambda c: c.epoch)
