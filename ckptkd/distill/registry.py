"""Distillation methods by name (mdistiller's ``distiller_dict``): one small class per file.

A method is what ``ckptkd.train.fit`` calls on every batch,
``method(net, x, y, idx, epoch) -> (logits, {name: loss})``, with each loss already weighted;
the loop sums them. ``kd.method`` names it; its own parameters are the ``KDConfig`` section
of its name (``kd.dkd``), a typed dataclass in ``ckptkd.config``, which knows no method.
This module checks names and parameters (``check_method``), so the config layer need not
import it.

A new method is one file in this package that subclasses ``Method`` and is decorated with
``@register_method``; the package imports every module in it, so the CLI (``--method``),
configs (``kd.method``) and studies pick it up with no edit elsewhere.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..config import KDConfig, checks
from ..errors import CkptkdError, closest


class Method:
    """Base class of a distillation method.

    ``uses_cache``: the method reads only the teacher's target log p_t^T (what
    ``ckptkd.teacher_cache`` serves); a method that needs more (features) sets it False
    and runs the teacher itself. ``single_teacher``: the method refuses an ensemble.
    ``needs_features``: teacher and student must have the timm feature API (``check_models``).
    ``extra``: a module of the method's own parameters that train with the student
    (a regressor); ``fit`` optimises, saves and resumes it with the student.
    ``shared``: the ``KDConfig`` fields the method reads besides its own section (they
    enter its study cell key).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_cache: ClassVar[bool] = True
    single_teacher: ClassVar[bool] = False
    shared: ClassVar[tuple[str, ...]] = ("temperature", "combine")
    needs_features: ClassVar[bool] = False
    extra: nn.Module | None = None

    def __init__(self, teacher, cfg: KDConfig, cache=None, *, student: nn.Module | None = None, data=None):
        self.teacher, self.cfg, self.cache = teacher, cfg, cache

    @classmethod
    def params(cls, cfg: KDConfig):
        """This method's own parameters: the ``KDConfig`` section of its name, if any."""
        return getattr(cfg, cls.name, None)

    @classmethod
    def check(cls, cfg: KDConfig) -> None:
        """Range checks of this method's parameters (types are checked by the config parser)."""

    @classmethod
    def check_models(cls, teachers: dict[str, nn.Module], students: dict[str, nn.Module], in_shape) -> None:
        """Refuse teacher or student models (by name) this method cannot learn from (``needs_features``)."""

    def teacher_log_probs(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """The teacher's target log p_t^T for the batch: from the cache when it holds this
        epoch's views, else computed by the teacher (the same values, bit for bit)."""
        if self.cache is not None:
            target = self.cache.log_probs(idx, epoch, self.cfg.temperature)
            if target is not None:
                return target.to(x.device, non_blocking=True)
        return self.teacher.log_probs(x, self.cfg.temperature)

    def __call__(self, model, x, y, idx, epoch):
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"distillation method {cls.__name__} needs a new name, got {cls.name!r}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise CkptkdError(f"unknown kd.method {name!r}{closest(name, METHODS)}; "
                          f"registered methods: {', '.join(METHODS)}")
    return METHODS[name]


def check_method(cfg: KDConfig, *, teachers: int | None = None) -> type[Method]:
    """The method ``cfg`` names, after checking its parameters; with ``teachers``, that it can
    learn from that many checkpoints at once. Call it before writing anything."""
    method = get_method(cfg.method)
    for other in METHODS.values():  # every section, so a bad value in an unused one is caught too
        other.check(cfg)
    if teachers is not None and teachers > 1 and method.single_teacher:
        raise CkptkdError(f"kd.method {method.name} learns from one teacher's features, got an ensemble of "
                          f"{teachers} checkpoints; use one checkpoint, or a logit method ("
                          + ", ".join(n for n, m in METHODS.items() if not m.single_teacher) + ")")
    return method


@checks(KDConfig)
def _check_names(cfg: KDConfig) -> None:
    """Every config that holds a ``kd`` section is read with its method checked (the way
    policies and estimators check their names), not only where a command remembers to."""
    check_method(cfg)


def build_method(cfg: KDConfig, teacher, cache=None, *, student: nn.Module | None = None, data=None) -> Method:
    """The method of ``cfg`` for ``teacher`` (and ``cache``, when the method reads one)."""
    method = check_method(cfg, teachers=len(teacher.members))
    return method(teacher, cfg, cache if method.uses_cache else None, student=student, data=data)


def method_key(cfg: KDConfig) -> dict:
    """The KD settings a result depends on, as plain JSON (study cell keys, cached proxy
    students). For ``kd`` it is the three fields that existed before methods were
    registered, so cells and proxies computed then keep their keys; any other method adds
    its name and its own parameters."""
    legacy = {"temperature": cfg.temperature, "alpha": cfg.alpha, "combine": cfg.combine}
    if cfg.method == "kd":
        return legacy
    method = get_method(cfg.method)
    params = method.params(cfg)
    return {**{k: legacy[k] for k in method.shared}, "method": cfg.method,
            "params": dataclasses.asdict(params) if params is not None else {}}


def describe_method(cfg: KDConfig) -> str:
    """``cfg``'s method in a few words, for tables: ``kd (T=4, alpha=0.1)``, ``dkd (T=4, beta=8, ...)``."""
    key = method_key(cfg)
    parts = [f"T={cfg.temperature:g}"] if "temperature" in key else []
    parts += [f"alpha={cfg.alpha:g}"] if cfg.method == "kd" else []
    parts += [f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in key.get("params", {}).items()]
    return f"{cfg.method} ({', '.join(parts)})" if parts else cfg.method
