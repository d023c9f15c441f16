"""One small study three ways, in this one process: ``--executor local --jobs 1``, ``--jobs 2``,
and ``--executor ray`` on a local 2-CPU Ray. Prints their wall times, the ratios, Ray's
overhead (its wall less ``--jobs 2``'s, in all and per cell) and whether the three give the
same tables (tables.json less the ``cost`` columns, which are wall-clock ratios).

    python benchmarks/bench_executor.py                       # cells of several seconds each
    python benchmarks/bench_executor.py --teacher-epochs 4 --student-epochs 3   # a quick look

Ray is started before its run is timed (a cluster is up before a study comes to it); its
start-up is printed on its own. The study's analyses and selection run on the driver in
every mode, the same for all three. Targets (issue 20): Ray >= 1.6x faster than --jobs 1
when cells take >= 5 s; Ray's overhead <= 10% of --jobs 2's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ckptkd.config import StudyConfig, from_dict
from ckptkd.report.study import write_tables
from ckptkd.study import run_study
from ckptkd.study.executors import get_executor


def study_config(args) -> StudyConfig:
    return from_dict(StudyConfig, {
        "name": "bench-executor", "data": {"spec": "blobs", "num_samples": args.samples},
        "teacher": {"model": "mlp_m", "epochs": args.teacher_epochs, "save_every": args.teacher_epochs // 3},
        "student": {"model": "mlp_m", "epochs": args.student_epochs},
        "info": {"probe_size": 500}, "teacher_seeds": [0, 1], "student_seeds": [0],
        "estimators": ["kde"], "policies": ["last", "mi"], "snapshot_policies": ["mi"], "device": "cpu"})


def tables(root: Path) -> dict:
    out = json.loads((root / "tables.json").read_text())
    for row in out["selection"]:
        row.pop("cost", None)
    out["verdicts"].pop("cost", None)
    return out


def timed(cfg, root: Path, executor) -> tuple[float, dict]:
    t0 = time.perf_counter()
    results = run_study(cfg, root, progress=False, executor=executor)
    wall = time.perf_counter() - t0
    write_tables(results, root)
    return wall, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--student-epochs", type=int, default=40)
    args = p.parse_args()
    import ray

    torch.set_num_threads(1)
    cfg = study_config(args)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(1 min) at the start; torch {torch.__version__}, ray {ray.__version__}")
    walls, results, roots = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        for mode, jobs in (("local --jobs 1", 1), ("local --jobs 2", 2)):
            roots[mode] = Path(tmp) / mode.replace(" ", "")
            executor = get_executor("local", jobs=jobs)
            walls[mode], results[mode] = timed(cfg, roots[mode], executor)
            print(f"{mode:<16} {walls[mode]:7.1f} s", flush=True)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        startup = time.perf_counter() - t0
        mode = "ray (2 CPUs)"
        roots[mode] = Path(tmp) / "ray"
        executor = get_executor("ray")
        try:
            walls[mode], results[mode] = timed(cfg, roots[mode], executor)
        finally:
            executor.close()
            ray.shutdown()
        print(f"{mode:<16} {walls[mode]:7.1f} s (Ray's start-up, not in it: {startup:.1f} s)")
        same = all(tables(roots[m]) == tables(roots["local --jobs 1"]) for m in roots)
    r = results["local --jobs 1"]
    cells = len(r["teachers"]) + len(r["students"])
    cell_s = [c["wall_s"] for c in r["teachers"] + r["students"]]
    overhead = walls["ray (2 CPUs)"] - walls["local --jobs 2"]
    print(f"cells: {cells}, each {min(cell_s):.1f} to {max(cell_s):.1f} s (mean {sum(cell_s) / cells:.1f} s) "
          "under --jobs 1")
    print(f"speed-up over --jobs 1: --jobs 2 {walls['local --jobs 1'] / walls['local --jobs 2']:.2f}x, "
          f"ray {walls['local --jobs 1'] / walls['ray (2 CPUs)']:.2f}x (target >= 1.6x)")
    print(f"Ray's overhead over --jobs 2: {overhead:+.1f} s, {100 * overhead / walls['local --jobs 2']:+.1f}% of "
          f"its wall (target <= 10%), {overhead / cells:+.2f} s per cell")
    print(f"identical tables from all three: {same}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
