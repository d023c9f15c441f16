"""Policies that read nothing but the epochs: free, and the yardsticks for the others."""
from __future__ import annotations

from ..base import Policy, register


@register
class Last(Policy):
    """The full teacher: what plain KD uses."""

    name, summary = "last", "the final checkpoint (the full teacher); later epochs score higher"

    def scores(self, ckpts, ctx):
        return [float(c.epoch) for c in ckpts]


@register
class Halfway(Policy):
    """The paper's baseline intermediate teacher: half-way through training."""

    name, summary = "halfway", "the checkpoint nearest half the final epoch (the earlier one on a tie)"

    def scores(self, ckpts, ctx):
        target = ckpts[-1].epoch / 2
        # the epoch term only breaks ties, toward the earlier checkpoint (top_k prefers later ones)
        return [-abs(c.epoch - target) - 1e-6 * c.epoch / max(1, ckpts[-1].epoch) for c in ckpts]
