"""Data-source registry: a name maps to a reader ``fn(arg, cfg) -> (x, y, x_test, y_test)``.

A spec is ``NAME`` or ``NAME:ARG`` (ARG: a path); any other spec with a colon is
``module.path:function``, a user's function returning the four arrays. Inputs are numpy
arrays, or ``ImageFiles`` (images left on disk) from a source that ``streams``. Each source
declares the kind of data it gives, which picks the default augmentation
(``augment.default_augment``): ``image`` (natural images: flipped), ``grid`` (images of a
kind ckptkd cannot know, photos or glyphs: never flipped by default), ``signal``,
``tabular`` (feature vectors: not augmented), ``glyph`` (digits: flips change the class),
or ``None`` where only the array shape can tell (4-D: grid, 3-D: signal).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import CkptkdError, closest

KINDS = ("image", "grid", "signal", "glyph", "tabular", None)


@dataclass(frozen=True)
class Source:
    name: str
    read: Callable
    kind: str | None
    arg: str | None = None  # what follows the colon (PATH, DIR), or None: the name alone
    streams: bool = False  # can leave its images on disk (data.stream)

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


_SOURCES: dict[str, Source] = {}


def register_source(name: str, *, kind: str | None, arg: str | None = None, streams: bool = False):
    def add(fn):
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} registered twice")
        if kind not in KINDS:
            raise ValueError(f"data source {name!r}: kind must be one of {KINDS}, got {kind!r}")
        _SOURCES[name] = Source(name, fn, kind, arg, streams)
        return fn

    return add


def user_function(spec: str):
    """``module.path:function`` returning (x, y, x_test, y_test) arrays or tensors."""
    module_name, fn_name = spec.rsplit(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise CkptkdError(f"cannot import dataset {spec!r} ({e}); give module.path:function importable from "
                          "PYTHONPATH") from None
    out = fn()
    if not (isinstance(out, (tuple, list)) and len(out) == 4):
        raise CkptkdError(f"dataset function {spec!r} must return (x, y, x_test, y_test)")
    arrays = [np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in out]
    return tuple(arrays)


def _user_function(arg: str, cfg):
    return user_function(arg)


# the built-in sources (ckptkd/data/sources.py) import this module and register themselves; the
# package's __init__ imports them, so this module imports no source (timm's _registry.py)
USER = Source("module.path", _user_function, kind=None, arg="function")


def list_sources() -> list[Source]:
    """The registered sources in registration order, then ``module.path:function``."""
    return [*_SOURCES.values(), USER]


def dataset_names() -> str:
    return ", ".join(s.usage for s in list_sources())


def resolve(spec: str) -> tuple[Source, str]:
    """The source named by ``spec`` and its argument (for a user function: the whole spec)."""
    name, colon, arg = spec.partition(":")
    source = _SOURCES.get(name)
    if source is not None and bool(arg) == bool(source.arg):
        return source, arg
    if source is not None:
        raise CkptkdError(f"dataset {spec!r} is written {source.usage}")
    if arg and name:
        return USER, spec
    raise CkptkdError(f"unknown dataset {spec!r}{closest(name, _SOURCES)}; use one of {dataset_names()}")
