"""Choosing the teacher: a registry of policies that score checkpoints, and ``choose``.

    ckptkd/select/base.py       Policy, register, POLICIES, get_policy
    ckptkd/select/picks.py      top_k (single picks and snapshot ensembles), last, halfway
    ckptkd/select/choose.py     choose (one policy, or the union a+b), policy_scores
    ckptkd/select/context.py    SelectionContext: the inputs policies read, built lazily, cached
    ckptkd/select/policies/     one class per policy

Selection reads the training and validation splits, never the test split.
"""
from ..config import ProxyConfig
from . import policies  # noqa: F401  (registers every policy)
from .base import POLICIES, Policy, get_policy, register
from .choose import choose, parse_policy, policy_scores
from .context import SelectionContext
from .picks import by_epochs, check_k, halfway, last, max_picks, top_k

__all__ = ["Policy", "POLICIES", "register", "get_policy", "SelectionContext", "ProxyConfig", "top_k", "check_k",
           "max_picks", "choose", "policy_scores", "parse_policy", "last", "halfway", "by_epochs"]
