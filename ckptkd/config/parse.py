"""Configs from YAML and dicts: unknown keys and wrong types are ``CkptkdError``s that name the key;
every section is checked (``ckptkd.config.checks``) as it is built."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import CkptkdError, closest
from .checks import validate
from .sections import DataConfig, augment_choice

def from_dict(cls, data: Any, where: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CkptkdError(f"config section {where or 'top level'!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = _legacy_keys(cls, data)
    defaults = cls()
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise CkptkdError(f"unknown config key {path!r}{closest(str(key), names)}")
        if cls is DataConfig and key == "augment":
            value = augment_choice(value)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # a partial section keeps this parent's defaults for it (teacher vs student models)
            value = {**dataclasses.asdict(getattr(defaults, key)), **_legacy_keys(hints[key], value)}
        kwargs[key] = _coerce(hints[key], value, path)
    obj = cls(**kwargs)
    validate(obj, where)
    return obj


# keys that moved into a section of their own: (class, old key) -> section
_MOVED = {("InfoConfig", "noise_fraction"): "kde", ("InfoConfig", "alpha"): "renyi", ("InfoConfig", "bins"): "binning"}


def _legacy_keys(cls, data: dict) -> dict:
    """``data`` with the keys of older configs moved where they live now (info.alpha -> info.renyi.alpha)."""
    moved = {k: v for k, v in data.items() if (cls.__name__, k) in _MOVED}
    if not moved:
        return data
    data = {k: v for k, v in data.items() if k not in moved}
    for key, value in moved.items():
        section = _MOVED[(cls.__name__, key)]
        inner = data.get(section) if isinstance(data.get(section), dict) else {}
        data[section] = {key: value, **inner}  # the new place wins when both are given
    return data


def _coerce(tp, value, path: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise CkptkdError(f"config key {path!r} must be a list, got {value!r}")
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp]
    if not ok(value):
        raise CkptkdError(f"config key {path!r} must be {tp.__name__}, got {value!r}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an int beyond float range (YAML reads any number of digits)
            raise CkptkdError(f"config key {path!r} is too large for a float") from None
        if not math.isfinite(value):  # YAML's .inf / .nan, or --lr inf: no setting means that
            raise CkptkdError(f"config key {path!r} must be a finite number, got {value}")
        return value
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def hashed_form(config):
    """``config`` (a ``to_dict``) as its hash reads it: ``data.stream`` always as false. Streamed inputs
    are bitwise those in memory, and an unset ``stream`` may choose either way on another machine, so
    the choice is no part of what a run is; false is what every config said before it could be unset."""
    if isinstance(config, dict):
        return {k: (False if k == "stream" and isinstance(v, (bool, type(None))) else hashed_form(v))
                for k, v in config.items()}
    return config


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a mapping of sections; every way it can be wrong is a CkptkdError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise CkptkdError(f"config file {str(path)!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CkptkdError(f"config file {str(path)!r} is not valid YAML ({first})") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise CkptkdError(f"config file {str(path)!r} is nested too deeply to be a ckptkd config") from None
    except OSError as e:  # a folder, an unreadable file, ...
        raise CkptkdError(f"config file {str(path)!r} cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise CkptkdError(f"config file {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(cls, path: str | Path | None, overrides: dict | None = None):
    """Read a YAML config of type ``cls`` and apply dotted-key overrides (CLI flags)."""
    data = read_yaml(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CkptkdError(f"config key {p!r} must be a mapping to set {dotted!r}")
        node[leaf] = value
    return from_dict(cls, data)
