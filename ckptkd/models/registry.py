"""Model registry: a name maps to a factory ``fn(num_classes, in_shape) -> nn.Module``.

``in_shape`` is one sample's shape without the batch axis: ``(C, L)`` for 1-D signals,
``(C, H, W)`` for images. Specs that are not registered names are resolved here too:
``module.path:function`` builds a user's model, ``torchvision:NAME`` a torchvision one.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import nn

from ..errors import CkptkdError, closest

# each architecture module imports this one and registers its models; ckptkd/models/__init__.py
# imports them all, so this module imports no model (timm's _registry.py)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def add(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(spec: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    """Build the model named by ``spec`` for ``num_classes`` classes and inputs of ``in_shape``."""
    in_shape = tuple(int(s) for s in in_shape)
    if spec in _REGISTRY:
        model = _REGISTRY[spec](num_classes=num_classes, in_shape=in_shape)
    elif spec.startswith("torchvision:"):
        model = _torchvision(spec.split(":", 1)[1], num_classes)
    elif ":" in spec:
        model = _user_model(spec, num_classes, in_shape)
    else:
        raise CkptkdError(
            f"unknown model {spec!r}{closest(spec, _REGISTRY)}; `ckptkd models` lists the registered ones"
        )
    _check_fits(model, spec, num_classes, in_shape)
    return model


def _check_fits(model: nn.Module, spec: str, num_classes: int, in_shape: tuple[int, ...]) -> None:
    """One forward of two blank samples: a model that cannot read this data (a 2-D network on
    1-D signals) or that gives another number of outputs than the data has classes is refused
    here, in one line, instead of with a traceback in the first batch or a silent mismatch."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *in_shape))
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, ValueError, IndexError, ...
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CkptkdError(f"model {spec!r} cannot take inputs of shape {in_shape} ({type(e).__name__}: {detail}); "
                          "choose a model for this data") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CkptkdError(f"model {spec!r} gives outputs of shape {got} per sample but the data has {num_classes} "
                          "classes; it must return one logit per class")


def _user_model(spec: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    module_name, fn_name = spec.rsplit(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise CkptkdError(
            f"cannot import model {spec!r} ({e}); give module.path:function importable from PYTHONPATH"
        ) from None
    model = fn(num_classes=num_classes, in_shape=in_shape)
    if not isinstance(model, nn.Module):
        raise CkptkdError(f"model function {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _torchvision(name: str, num_classes: int) -> nn.Module:
    try:
        import torchvision.models as tvm
    except Exception as e:  # a broken torchvision install fails with many error types
        raise CkptkdError(
            f"model 'torchvision:{name}' needs torchvision, which cannot be imported ({type(e).__name__}); "
            "install a torchvision that matches your torch, or use a ckptkd model"
        ) from None
    try:
        return tvm.get_model(name, weights=None, num_classes=num_classes)
    except ValueError:
        raise CkptkdError(f"torchvision has no model {name!r}{closest(name, tvm.list_models())}") from None
