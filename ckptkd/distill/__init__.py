"""Distillation: the registered methods (``registry``; one file each) and ``distill``.

    kd      Hinton KD (kd.py)
    dkd     Decoupled KD, Zhao et al. 2022 (dkd.py)
    fitnet  FitNets hints on penultimate features, Romero et al. 2015 (fitnet.py)

Every module of this package is imported here, so a method's file registers it; the
teachers are ``ckptkd.teacher``, their cached outputs ``ckptkd.teacher_cache``.
"""
from __future__ import annotations

import importlib
import pkgutil

from .registry import (METHODS, Method, build_method, check_method, describe_method, get_method, method_key,
                       register_method)

# each method file registers itself; kd (the default) first, then the others by name
for _module in sorted((m.name for m in pkgutil.iter_modules(__path__)), key=lambda n: (n != "kd", n)):
    if _module not in ("api", "registry"):
        importlib.import_module(f"{__name__}.{_module}")

from .api import distill  # noqa: E402
from .dkd import DKD, dkd_loss, dkd_terms  # noqa: E402
from .fitnet import FitNet  # noqa: E402
from .kd import KD, kd_loss  # noqa: E402

__all__ = ["METHODS", "Method", "register_method", "get_method", "check_method", "build_method", "method_key",
           "describe_method", "distill", "KD", "kd_loss", "DKD", "dkd_loss", "dkd_terms", "FitNet"]
