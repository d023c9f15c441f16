"""The information estimators by name: one small class each, wrapping a pure function of
``ckptkd.info.estimators``. ``analyze`` looks the configured one up here.

An estimator reads its own parameters from its section of ``InfoConfig`` (``info.kde``,
``info.renyi``, ...; the dataclasses live in ``ckptkd.config`` with the other configs) and
returns raw I(X;F) and I(Y;F) in nats, plus whatever else it reports.
"""
from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass

import torch

from ..config import InfoConfig, checks, one_of
from ..errors import CkptkdError, closest
from .estimators import binning_mi, categorical_mi, kde_mi, renyi_ixf, renyi_iyf


class Estimator:
    name: str = ""
    summary: str = ""

    def params(self, info: InfoConfig):
        """This estimator's parameters: the ``InfoConfig`` section of its name."""
        return getattr(info, self.name, None)

    def estimate(self, f: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 info: InfoConfig) -> dict:
        """{"ixf": ..., "iyf": ..., ...} in nats for features ``f`` (or ``logits``) of inputs ``x``, labels ``y``."""
        raise NotImplementedError

    def ceiling_x(self, n: int, num_classes: int) -> float:
        """The largest I(X;F) it can report on ``n`` probe samples."""
        return math.log(n)


ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    if not cls.name or cls.name in ESTIMATORS:
        raise ValueError(f"estimator {cls.__name__} needs a new name, got {cls.name!r}")
    ESTIMATORS[cls.name] = cls()
    return cls


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise CkptkdError(f"unknown estimator {name!r}{closest(name, ESTIMATORS)}; use one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


@checks(InfoConfig)
def _check_estimator_name(info: InfoConfig) -> None:
    one_of("info.estimator", info.estimator, tuple(ESTIMATORS))


def key_params(info: InfoConfig) -> dict:
    """The estimator settings a cached estimate is keyed on. The flat names of the first four
    estimators' parameters are kept, and other parameters enter only when they differ from
    their defaults, so estimates cached before the registry stay valid."""
    out = {"noise_fraction": info.kde.noise_fraction, "alpha": info.renyi.alpha, "bins": info.binning.bins}
    params = get_estimator(info.estimator).params(info)
    if params is not None and is_dataclass(params):
        default = asdict(type(params)())
        extra = {k: v for k, v in asdict(params).items() if k not in out and v != default[k]}
        if extra:
            out[info.estimator] = extra
    return out


@register_estimator
class KDE(Estimator):
    name, summary = "kde", "pairwise-distance (KDE) upper bounds (Kolchinsky & Tracey 2017)"

    def estimate(self, f, logits, x, y, info):
        r = kde_mi(f, y, noise_fraction=info.kde.noise_fraction)
        return {"ixf": r.ixf_upper, "iyf": r.iyf_upper, "ixf_lower": r.ixf_lower, "iyf_lower": r.iyf_lower}


@register_estimator
class Renyi(Estimator):
    name, summary = "renyi", "matrix-based Renyi alpha-entropy (Sanchez Giraldo et al. 2015)"

    def estimate(self, f, logits, x, y, info):
        p = info.renyi
        kw = dict(alpha=p.alpha, subset=p.subset, repeats=p.repeats)
        return {"ixf": renyi_ixf(x, f, **kw).mi, "iyf": renyi_iyf(y, f, **kw).mi}


@register_estimator
class Categorical(Estimator):
    name, summary = "categorical", "exact MI of the softmax prediction at info.tau (at most log C)"

    def estimate(self, f, logits, x, y, info):
        r = categorical_mi(torch.softmax(logits / info.tau, dim=1), y)
        return {"ixf": r.ixf, "iyf": r.iyf}

    def ceiling_x(self, n, num_classes):
        return min(math.log(n), math.log(num_classes))


@register_estimator
class Binning(Estimator):
    name, summary = "binning", "binned features (Shwartz-Ziv & Tishby 2017), for comparison only"

    def estimate(self, f, logits, x, y, info):
        r = binning_mi(f, y, bins=info.binning.bins)
        return {"ixf": r.ixf, "iyf": r.iyf}
