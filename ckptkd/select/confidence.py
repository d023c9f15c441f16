"""A statement of confidence with the pick: can the policy's own evidence tell it from ``last``?

A policy that keeps per-sample values behind its scores (``Policy.evidence``: per-sample
validation NLLs for ``val-nll`` and ``val-nll-1se``, per-sample training-target credit for
``aum-fit``) lets the pick be compared with the last checkpoint on the same samples: d is
the mean of (pick - last), higher = better for the pick, and SE its paired standard error.

    |d| <= SE   "tied with last within the noise"
    d > SE      "ahead of last by d +- SE"
    d < -SE     "behind last by |d| +- SE"

One standard error is the band ``val-nll-1se`` already treats as a tie. A policy without
per-sample evidence says so instead of inventing a margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..trajectory import Checkpoint
from .base import get_policy


@dataclass
class Evidence:
    values: list[torch.Tensor]  # per checkpoint, per sample, higher = better
    unit: str  # what d is in, e.g. "nats of validation NLL"
    over: str  # what the samples are, e.g. "validation samples"
    scale: float = 1.0  # printed as scale * d (100: points)


def compare_with_last(evidence: Evidence, ckpts: Sequence[Checkpoint], pick: Checkpoint) -> dict:
    i, last = ckpts.index(pick), len(ckpts) - 1
    diff = (evidence.values[i] - evidence.values[last]).double()
    n = len(diff)
    d = float(diff.mean()) * evidence.scale
    se = (float(diff.std()) / math.sqrt(n) if n > 1 else 0.0) * evidence.scale
    verdict = "tied" if abs(d) <= se else ("ahead" if d > 0 else "behind")
    return {"d": d, "se": se, "n": n, "unit": evidence.unit, "over": evidence.over, "verdict": verdict}


def statement(policy: str, ckpts: Sequence[Checkpoint], picks: Sequence[Checkpoint], ctx) -> dict:
    """{"statement": one line, "picks": [per picked epoch: epoch, vs, verdict, d, se, n, unit]}
    for the single policy ``policy`` and its ``picks`` of ``ckpts``."""
    last = ckpts[-1]
    rows, lines = [], []
    evidence = None
    if any(p.epoch != last.epoch for p in picks):
        evidence = get_policy(policy).evidence(ckpts, ctx)
    for p in picks:
        row = {"epoch": p.epoch, "vs": last.epoch}
        if p.epoch == last.epoch:
            row["verdict"] = "last"
            lines.append(f"epoch {p.epoch} is the last checkpoint")
        elif evidence is None:
            row["verdict"] = "unmeasured"
            lines.append(f"epoch {p.epoch}; policy {policy} keeps no per-sample evidence, so its margin over last "
                         f"(epoch {last.epoch}) is not measured")
        else:
            row |= compare_with_last(evidence, ckpts, p)
            margin = f"{abs(row['d']):.3g} ± {row['se']:.2g} {row['unit']} (paired, n = {row['n']} {row['over']})"
            vs = f"last (epoch {last.epoch})"
            if row["verdict"] == "tied":
                sign = "+" if row["d"] >= 0 else "-"
                lines.append(f"epoch {p.epoch}, tied with {vs} within the noise: {sign}{margin}")
            else:
                lines.append(f"epoch {p.epoch}, {row['verdict']} {'of ' if row['verdict'] == 'ahead' else ''}{vs} "
                             f"by {margin}")
        rows.append(row)
    return {"statement": "; ".join(lines), "picks": rows}
