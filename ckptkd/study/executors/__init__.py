"""Executors: what runs a study's cells. One module per engine, registered by name.

The runner decides *which* cells to run (the unfinished ones, phase by phase: teachers,
then the analyses and the selection on the driver, then the students); an executor decides
*where*. Every executor hands each finished cell back to the runner through ``done``, so
the progress bar, the invocation log and the tables are the same whichever ran it.

    local   this machine: one cell at a time in this process, or ``--jobs N`` processes
    ray     a Ray cluster (``--address``) or a Ray started on this machine; no shared disk

A new engine is one file here that subclasses ``base.Executor`` and decorates it with
``@register_executor("name")``; ``ckptkd study --executor name`` then finds it.
"""
from __future__ import annotations

import importlib
import pkgutil

from ...errors import CkptkdError, closest
from .base import EXECUTORS, Executor, Tracker, register_executor  # noqa: F401  (the API)


def _load_builtins() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def get_executor(name: str, *, jobs: int = 1, address: str | None = None) -> Executor:
    """The executor ``name`` with its options checked (one-line ``CkptkdError`` otherwise)."""
    _load_builtins()
    if name not in EXECUTORS:
        raise CkptkdError(f"unknown executor {name!r}{closest(name, EXECUTORS)}; use one of "
                          f"{', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[name](jobs=jobs, address=address)
