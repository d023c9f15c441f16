"""What a selection policy is, and the registry of them by name.

A policy turns a trajectory (checkpoints in epoch order) and a ``SelectionContext`` into
one score per checkpoint, higher = better. ``top_k`` (``ckptkd.select.picks``) makes the
single pick or the snapshot ensemble from those scores, the same way for every policy.
Adding a policy is one class in one module of ``ckptkd/select/policies/``, decorated with
``@register``; the CLI, the configs, studies and reports read ``POLICIES``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

from ..errors import CkptkdError, closest
from ..trajectory import Checkpoint

if TYPE_CHECKING:
    from .context import SelectionContext


class Spend(NamedTuple):
    """What a policy will spend, declared before it spends it (``ckptkd.select.budget``)."""

    distillations: float  # in full distillations: student sample passes (epochs x samples) over one distillation's
    how: str = ""  # the count behind it, e.g. "10 candidates x 0.20 of the student's epochs x 1.00 of its data"
    cheaper: str = ""  # how to spend less, for the refusal


class Policy:
    """One way of scoring checkpoints. Subclasses set the three class attributes and ``scores``."""

    name: str = ""
    summary: str = ""  # one line, for ``ckptkd policies``
    needs: tuple[str, ...] = ()  # inputs built by the context: "val", "analysis", "proxy"
    takes_epochs: bool = False  # True: the user names the epochs; the policy scores nothing

    def scores(self, ckpts: Sequence[Checkpoint], ctx: "SelectionContext") -> list[float]:
        raise NotImplementedError

    def cost_s(self, ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None") -> float:
        """Wall seconds the policy's inputs took to compute (as recorded, so the same when
        they are served from the context's cache); 0 for policies that read nothing."""
        return 0.0

    def spend(self, ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None") -> Spend:
        """What scoring ``ckpts`` will cost in full distillations, computed without training
        anything; 0 for policies that only read probes (forward passes of the checkpoints)."""
        return Spend(0.0)

    def evidence(self, ckpts: Sequence[Checkpoint], ctx: "SelectionContext | None"):
        """Per-sample values behind the scores (``ckptkd.select.confidence.Evidence``), from
        which the pick is compared with ``last``; None when the policy keeps none."""
        return None

    def __repr__(self) -> str:
        return f"<policy {self.name}>"


POLICIES: dict[str, Policy] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` a policy under ``cls.name``."""
    if not cls.name or "+" in cls.name:
        raise ValueError(f"policy {cls.__name__} needs a name without '+', got {cls.name!r}")
    if cls.name in POLICIES:
        raise ValueError(f"policy {cls.name!r} is registered twice")
    POLICIES[cls.name] = cls()
    return cls


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise CkptkdError(f"unknown policy {name!r}{closest(name, POLICIES)}; use one of {', '.join(POLICIES)} "
                          "(ckptkd policies describes them)")
    return POLICIES[name]
