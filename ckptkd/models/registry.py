"""Model registry: a name maps to a factory ``fn(num_classes, in_shape) -> nn.Module``.

``in_shape`` is one sample's shape without the batch axis: ``(C, L)`` for 1-D signals,
``(C, H, W)`` for images. Specs that are not registered names are resolved here too:
``module.path:function`` builds a user's model, ``torchvision:NAME`` a torchvision one.
"""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from ..errors import CkptkdError, closest

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def add(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create_model(spec: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    """Build the model named by ``spec`` for ``num_classes`` classes and inputs of ``in_shape``."""
    _load_builtins()
    in_shape = tuple(int(s) for s in in_shape)
    if spec in _REGISTRY:
        return _REGISTRY[spec](num_classes=num_classes, in_shape=in_shape)
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1], num_classes)
    if ":" in spec:
        return _user_model(spec, num_classes, in_shape)
    raise CkptkdError(
        f"unknown model {spec!r}{closest(spec, _REGISTRY)}; `ckptkd models` lists the registered ones"
    )


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


def _load_builtins() -> None:
    # importing the architecture modules runs their @register_model decorators
    from . import small, resnet, wrn, mobilenetv2, shufflenetv2  # noqa: F401
