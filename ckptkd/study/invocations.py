"""Each ``ckptkd study`` invocation, including the ones that never finished.

``STUDY/invocations.jsonl`` gets a line when an invocation starts and one when it ends,
however it ends (finished, interrupted, failed). An invocation killed outright leaves only
its start line and is reported as ``killed``. This keeps the wall time of a study honest
when it took several invocations.
"""
from __future__ import annotations

import json
import os
import platform
import time
import uuid
from pathlib import Path

import torch

from ..io import append_jsonl, read_json

LOG = "invocations.jsonl"


def _append(root: Path, record: dict) -> None:
    append_jsonl(root / LOG, record)


class Invocation:
    """Context manager: logs the start, counts cells with ``ran()``, logs how it ended."""

    def __init__(self, root: Path, jobs: int, threads: int, enabled: bool = True, executor: dict | None = None):
        self.root, self.cells_run, self.enabled = root, 0, enabled  # disabled: a torchrun rank other than 0
        self.started = time.time()
        self.id = uuid.uuid4().hex[:16]
        self.start = {"id": self.id, "event": "start", "started": time.strftime("%Y-%m-%dT%H:%M:%S",
                      time.localtime(self.started)), "jobs": jobs, "threads": threads,
                      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
        if executor:  # what ran the cells: the executor and, on a cluster, its resources
            self.start["executor"] = executor

    def ran(self, n: int = 1) -> None:
        self.cells_run += n

    def __enter__(self) -> "Invocation":
        if self.enabled:
            _adopt_results_json(self.root)
            _append(self.root, self.start)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if not self.enabled:
            return
        status = ("finished" if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt)
                  else f"failed: {exc}")
        _append(self.root, {"id": self.id, "event": "end", "status": status, "cells_run": self.cells_run,
                            "elapsed_s": time.time() - self.started})


def invocations(root: Path) -> list[dict]:
    """One dict per invocation, oldest first: the start fields merged with its end (if any)."""
    path = Path(root) / LOG
    if not path.exists():
        return []
    merged: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        entry = merged.setdefault(record.get("id", ""), {"status": "killed", "cells_run": None, "elapsed_s": None})
        entry.update({k: v for k, v in record.items() if k != "event"})
    return list(merged.values())


def _adopt_results_json(root: Path) -> None:
    """Studies from before this log kept finished invocations in results.json: copy them in once."""
    if (root / LOG).exists() or not (root / "results.json").exists():
        return
    for i, old in enumerate(read_json(root / "results.json").get("invocations", [])):
        _append(root, {"status": "finished", **old, "id": f"results.json-{i}", "event": "start"})
