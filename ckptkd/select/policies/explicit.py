"""Policy ``explicit``: the user's own epochs."""
from __future__ import annotations

from ...errors import CkptkdError
from ..base import Policy, register


@register
class Explicit(Policy):
    """The epochs the user names (``select.checkpoints``); ``choose`` hands them over as given."""

    name, summary = "explicit", "the epochs named by select.checkpoints (--checkpoints E ...)"
    takes_epochs = True

    def scores(self, ckpts, ctx):
        raise CkptkdError("policy explicit has no scores: it takes epochs (choose(..., epochs=[...]))")
