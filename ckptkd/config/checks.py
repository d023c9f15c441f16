"""The type and range checks of every config section, and the hook (``checks``) through which
each registry checks the names it owns: this package sits below every layer and imports none."""
from __future__ import annotations

import math
from typing import Any, Callable

from ..errors import CkptkdError, closest
from .sections import (AUGMENT_CHOICES, BinningParams, DataConfig, InfoConfig, KDConfig,
                       KDEParams, ProxyConfig, RenyiParams, SelectConfig, StageConfig, StudyConfig,
                       augment_choice)

# A registry checks the names it owns, with @checks(Section) in its own module (ckptkd.data.noise:
# data.label_noise_kind; info.registry: info.estimator; select.choose: select.policy); a new one
# joins the same way. A study's checks, which know how it uses seeds and checkpoints, are in
# ckptkd.study.runner. ckptkd/__init__.py imports all of them, and runs before this module does.
_REGISTRY_CHECKS: dict[type, list[Callable[[Any], None]]] = {}


def checks(cls: type):
    """Decorator: ``fn(section)`` runs on every ``cls`` section ``from_dict`` builds, after its range checks."""
    def add(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _REGISTRY_CHECKS.setdefault(cls, []).append(fn)
        return fn

    return add


def check(cond: bool, message: str) -> None:
    if not cond:
        raise CkptkdError(message)


def one_of(key: str, value: str, choices) -> None:
    check(value in choices, f"{key} must be one of {', '.join(choices)}, got {value!r}{closest(value, choices)}")


def check_budget_value(value, key: str = "--budget") -> float:
    """``value`` as a selection budget (ckptkd.select.budget): a finite number of full
    distillations >= 0, else one line naming the fix. Configs and the Python API share it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    check(ok, f"{key} must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), got {value!r}")
    return float(value)


def validate(cfg, where: str = "") -> None:
    """A section's range checks, then its registries' (``checks``); ``from_dict`` calls it on each section."""
    if isinstance(cfg, DataConfig):
        check(cfg.num_samples >= 20, f"data.num_samples must be at least 20, got {cfg.num_samples}")
        check(0 < cfg.test_fraction < 1, f"data.test_fraction must be in (0, 1), got {cfg.test_fraction}")
        check(cfg.image_size is None or cfg.image_size > 0, "data.image_size must be positive")
        check(0 <= cfg.label_noise < 1, f"data.label_noise must be in [0, 1), got {cfg.label_noise}")
        check(0 <= cfg.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
        one_of("data.augment", augment_choice(cfg.augment), AUGMENT_CHOICES)
        check(cfg.workers >= 0, f"data.workers must be >= 0, got {cfg.workers}")
    elif isinstance(cfg, StageConfig):
        at = f"{where}." if where else ""  # teacher., student. or train.
        check(cfg.epochs > 0, f"{at}epochs must be a positive integer, got {cfg.epochs}")
        check(cfg.batch_size > 1, f"{at}batch_size must be at least 2 (BatchNorm needs it), got {cfg.batch_size}")
        check(cfg.lr > 0, f"{at}lr must be positive, got {cfg.lr}")
        check(0 <= cfg.momentum < 1, f"{at}momentum must be in [0, 1), got {cfg.momentum}")
        check(cfg.weight_decay >= 0, f"{at}weight_decay must be >= 0, got {cfg.weight_decay}")
        one_of(f"{at}schedule", cfg.schedule, ("cosine", "multistep"))
        check(cfg.save_every >= 0, f"{at}save_every must be >= 0, got {cfg.save_every}")
        check(0 < cfg.gamma <= 1, f"{at}gamma must be in (0, 1], got {cfg.gamma}")
    elif isinstance(cfg, KDConfig):
        check(cfg.temperature > 0, f"kd.temperature must be positive, got {cfg.temperature}")
        check(0 <= cfg.alpha <= 1, f"kd.alpha must be in [0, 1], got {cfg.alpha}")
        one_of("kd.combine", cfg.combine, ("logits", "probs"))
    elif isinstance(cfg, SelectConfig):
        check(cfg.k >= 1, f"select.k must be at least 1, got {cfg.k}")
        check(cfg.min_spacing >= 0, f"select.min_spacing must be >= 0, got {cfg.min_spacing}")
        check_budget_value(cfg.budget, "select.budget")
    elif isinstance(cfg, ProxyConfig):
        check(0 < cfg.epoch_fraction <= 1, f"select.proxy.epoch_fraction must be in (0, 1], got {cfg.epoch_fraction}")
        check(0 < cfg.data_fraction <= 1, f"select.proxy.data_fraction must be in (0, 1], got {cfg.data_fraction}")
    elif isinstance(cfg, KDEParams):
        check(cfg.noise_fraction > 0, f"info.kde.noise_fraction must be positive, got {cfg.noise_fraction}")
    elif isinstance(cfg, RenyiParams):
        check(cfg.alpha > 0 and cfg.alpha != 1, f"info.renyi.alpha must be positive and not 1, got {cfg.alpha}")
        check(cfg.subset >= 10 and cfg.repeats >= 1, "info.renyi.subset must be at least 10 and repeats at least 1")
    elif isinstance(cfg, BinningParams):
        check(cfg.bins >= 2, f"info.binning.bins must be at least 2, got {cfg.bins}")
    elif isinstance(cfg, InfoConfig):
        one_of("info.features", cfg.features, ("penultimate", "logits", "softmax"))
        one_of("info.scaling", cfg.scaling, ("minmax", "ceiling", "raw"))
        check(cfg.tau > 0, f"info.tau must be positive, got {cfg.tau}")
        check(cfg.probe_size >= 10, f"info.probe_size must be at least 10, got {cfg.probe_size}")
        check(cfg.weight_x >= 0 and cfg.weight_y >= 0 and cfg.weight_x + cfg.weight_y > 0,
              "info.weight_x and info.weight_y must be >= 0 and not both 0")
    elif isinstance(cfg, StudyConfig):
        check_budget_value(cfg.budget, "budget")
        for b in cfg.budget_sweep:
            check_budget_value(b, "each budget_sweep value")
        check(len(set(cfg.budget_sweep)) == len(cfg.budget_sweep),
              f"budget_sweep values must be distinct, got {cfg.budget_sweep}")
    for registry_check in _REGISTRY_CHECKS.get(type(cfg), ()):
        registry_check(cfg)
    if hasattr(cfg, "device"):
        check(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
              f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
