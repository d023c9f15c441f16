"""Cost of choosing the teacher by information vs the cost of one distillation.

Algorithm 1 is only worth running if it is cheap next to what it replaces (distilling a
student from every checkpoint). This measures, in one process and on the default setup of
`ckptkd run` (MNIST-1D, cnn1d_l teacher with 10 checkpoints, cnn1d_xs student, 30 epochs):

    ratio = analyze(10 checkpoints, default probe set, no cache) / distill(one student)

Both sides are repeated alternately and the medians compared. Usage:

    python benchmarks/bench_info_cost.py [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ckptkd.config import InfoConfig, KDConfig, RunConfig
from ckptkd.data import load_dataset
from ckptkd.distill import Teacher, distill
from ckptkd.info.analyze import analyze
from ckptkd.train import train
from ckptkd.trajectory import Run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = RunConfig()  # the built-in default job
    data = load_dataset(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.create(Path(tmp) / "teacher", {"bench": 1}, model=cfg.teacher.model, num_classes=data.num_classes,
                         in_shape=data.in_shape, data_fingerprint=data.fingerprint)
        print(f"training the teacher ({cfg.teacher.model}, {cfg.teacher.epochs} epochs) ...", flush=True)
        train(data, cfg.teacher, seed=0, run=run, progress=False)
        ckpts = run.checkpoints()[-10:]
        teacher = Teacher.from_checkpoints(ckpts[-1:], data.num_classes, data.in_shape)
        t_info, t_kd = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            analyze(ckpts, data, InfoConfig(), progress=False)  # no folder: no cache
            t_info.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            distill(data, cfg.student, teacher, KDConfig(), seed=0, progress=False)
            t_kd.append(time.perf_counter() - t0)
    info, kd = statistics.median(t_info), statistics.median(t_kd)
    print(f"threads {args.threads}, {len(ckpts)} checkpoints, probe set {InfoConfig().probe_size}, "
          f"student {cfg.student.model} x {cfg.student.epochs} epochs")
    print(f"analyze 10 checkpoints : {info:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_info)})")
    print(f"one distillation       : {kd:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_kd)})")
    print(f"ratio analyze / distill: {info / kd:.3f}  (target <= 0.05)")


if __name__ == "__main__":
    main()
