"""Running the checks: the name -> function table, one check guarded (an exception is a FAIL
with its first line), the environment, and gpu_check.json rewritten after every check."""
from __future__ import annotations

import json
import os
import platform
import threading
import time
import traceback
from pathlib import Path

import torch

from .check_cache import check_cache
from .check_cpu_vs_cuda import check_cpu_vs_cuda
from .check_ensemble import check_ensemble
from .check_paper import check_paper
from .check_throughput import check_throughput
from .check_train import check_compile, check_torchrun, check_train
from .common import GROUP, first_line
from .context import Context


class Interrupted(BaseException):
    """SIGTERM (the wrapper's ``timeout``) or the script's own deadline inside a check."""


CHECK_FUNCTIONS = {"cpu_vs_cuda": check_cpu_vs_cuda, "train": check_train, "ensemble": check_ensemble,
                   "cache": check_cache, "compile": check_compile, "torchrun": check_torchrun,
                   "throughput": check_throughput, "paper": check_paper}


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


class Report:
    """gpu_check.json, rewritten (atomically) after every check."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data = path, {**head, "checks": {}}

    def save(self) -> None:
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def run_check(name: str, fn, ctx: Context, report: Report) -> dict:
    """Run one check, never raising (but for SIGTERM): ok / FAIL / partial, its figures, its time."""
    entry = {"group": GROUP[name], "status": "FAIL", "summary": "", "error": None, "figures": {}, "seconds": None}
    report.data["checks"][name] = entry
    t0 = time.perf_counter()
    try:
        ok, entry["summary"] = fn(ctx, entry["figures"])
        entry["status"] = "ok" if ok else "FAIL"
    except Interrupted:
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        if name == "paper" and entry["figures"].get("finished"):
            entry["status"], entry["summary"] = (
                "partial", f"stopped at the time limit after {entry['figures']['finished']}")
        else:
            entry["error"] = entry["summary"] = "interrupted at the time limit"
        report.save()
        print_line(name, entry)
        raise
    except Exception as e:  # noqa: BLE001 - every failure is a result to record, and the next check runs
        entry["error"] = first_line(e)
        entry["summary"] = entry["error"]
        entry["traceback"] = traceback.format_exc().splitlines()[-40:]
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    report.save()
    print_line(name, entry)
    return entry


def print_line(name: str, entry: dict) -> None:
    status = {"ok": "ok", "FAIL": "FAIL", "partial": "ok", "skipped": "skip"}[entry["status"]]
    print(f"{status:<4} {GROUP[name]} {name:<11} {entry['summary']}  ({entry['seconds']} s)", flush=True)


def run_all(names: list[str], ctx: Context, report: Report) -> bool:
    failed = False
    for name in names:
        late = ctx.remaining() < (ctx.p.paper_min_s if name == "paper" else 0)
        if late:
            report.data["checks"][name] = entry = {"group": GROUP[name], "status": "skipped", "seconds": 0,
                                                   "summary": "skipped: not enough time left", "figures": {}}
            report.save()
            print_line(name, entry)
            continue
        entry = run_check(name, CHECK_FUNCTIONS[name], ctx, report)
        failed |= entry["status"] == "FAIL"
    return failed


def in_main_thread() -> bool:
    """Python lets only the main thread install a signal handler."""
    return threading.current_thread() is threading.main_thread()


def on_sigterm(signum, frame):
    raise Interrupted()
