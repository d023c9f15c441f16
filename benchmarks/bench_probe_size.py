"""What the probe-set size buys: analysis time against how well the score ranks the teachers.

Runs Algorithm 1's analysis (KDE, penultimate features) of a finished study's trajectory
with several probe sizes, in one process, and prints for each: the time for all of the
trajectory's checkpoints, the Spearman correlation of the score with the students of each
checkpoint (the study's own cells), the checkpoint it picks, and that pick's regret.

    python benchmarks/bench_probe_size.py runs/studies/mnist1d [--sizes 250 500 1000 2000 4000]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ckptkd.config import StudyConfig, from_dict
from ckptkd.data import load_dataset
from ckptkd.info.analyze import analyze
from ckptkd.report.study import checkpoint_rows, spearman
from ckptkd.study.runner import teacher_cells
from ckptkd.trajectory import Run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="a finished study folder (results.json)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.study)
    results = json.loads((root / "results.json").read_text())
    cfg = from_dict(StudyConfig, results["config"])
    data = load_dataset(cfg.data)
    ckpts = Run(root / "cells" / teacher_cells(cfg)[0].id).checkpoints()
    student = {r["epoch"]: r["student_mean"] for r in checkpoint_rows(results)}
    best = max(student.values())
    print(f"{cfg.name}: {len(ckpts)} checkpoints, {len(data.y_train)} training samples, threads {args.threads}")
    print(f"{'probe':>6} {'time s':>7} {'s/ckpt':>7} {'Spearman':>9} {'pick':>5} {'regret':>7}")
    for n in args.sizes:
        info = replace(cfg.info, estimator="kde", probe_size=n)
        t0 = time.perf_counter()
        rows = analyze(ckpts, data, info, progress=False)  # no folder: nothing cached
        elapsed = time.perf_counter() - t0
        scores = [r["score"] for r in rows]
        rho = spearman(scores, [student[r["epoch"]] for r in rows])
        pick = max(rows, key=lambda r: (r["score"], r["epoch"]))["epoch"]
        print(f"{min(n, len(data.y_train)):>6} {elapsed:>7.2f} {elapsed / len(ckpts):>7.3f} {rho:>9.3f} {pick:>5} "
              f"{100 * (best - student[pick]):>7.2f}")


if __name__ == "__main__":
    main()
