"""Cost of choosing the teacher by information vs the cost of one distillation.

Algorithm 1 is only worth running if it is cheap next to what it replaces (distilling a
student from every checkpoint). This measures, in one process, on the setup of `ckptkd run`
(MNIST-1D, cnn1d_l teacher with 10 checkpoints, cnn1d_xs student, 30 epochs, the teacher
recomputed on every batch):

    ratio = analyze(10 checkpoints, default probe set, no cache) / distill(one student)

Both sides are repeated alternately and the medians compared. The analysis is then split
into its two parts (teacher forward passes over the probe set, and the estimator), and the
teacher passes of both sides are counted, because their ratio is a floor on the cost ratio
that no estimator can beat. ``--samples`` grows the generated MNIST-1D set (80% train),
everything else stays the default. Usage:

    python benchmarks/bench_info_cost.py [--repeats 3] [--threads 1] [--samples 5000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ckptkd.config import InfoConfig, KDConfig, RunConfig
from ckptkd.data import load_dataset
from ckptkd.distill import distill
from ckptkd.info.analyze import analyze, estimate, extract, probe_indices
from ckptkd.teacher import Teacher
from ckptkd.train import train
from ckptkd.trajectory import Run, load_model


def split_analysis(ckpts, data, cfg: InfoConfig) -> tuple[float, float]:
    """Seconds spent in (loading + forward passes, estimator) over ``ckpts``."""
    idx = probe_indices(data.y_train, cfg.probe_size, cfg.probe_seed)
    x, y = data.x_train[idx], data.y_train[idx]
    t_fwd = t_est = 0.0
    for ckpt in ckpts:
        t0 = time.perf_counter()
        f, logits = extract(load_model(ckpt, data.num_classes, data.in_shape), x, cfg.features, cfg.tau)
        t1 = time.perf_counter()
        estimate(f, logits, x.double(), y, cfg)
        t_fwd, t_est = t_fwd + t1 - t0, t_est + time.perf_counter() - t1
    return t_fwd, t_est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=RunConfig().data.num_samples, help="MNIST-1D samples generated")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = RunConfig()  # the built-in default job
    cfg.data = replace(cfg.data, num_samples=args.samples)
    info = InfoConfig()
    data = load_dataset(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.create(Path(tmp) / "teacher", {"bench": 1}, model=cfg.teacher.model, num_classes=data.num_classes,
                         in_shape=data.in_shape, data_fingerprint=data.fingerprint)
        print(f"training the teacher ({cfg.teacher.model}, {cfg.teacher.epochs} epochs, "
              f"{len(data.y_train)} samples) ...", flush=True)
        train(data, cfg.teacher, seed=0, run=run, progress=False)
        ckpts = run.checkpoints()[-10:]
        teacher = Teacher.from_checkpoints(ckpts[-1:], data.num_classes, data.in_shape)
        t_info, t_kd, parts = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            analyze(ckpts, data, info, progress=False)  # no folder: no cache
            t_info.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            distill(data, cfg.student, teacher, KDConfig(), seed=0, progress=False)
            t_kd.append(time.perf_counter() - t0)
            parts.append(split_analysis(ckpts, data, info))
    t_an, kd = statistics.median(t_info), statistics.median(t_kd)
    fwd = statistics.median(p[0] for p in parts)
    est = statistics.median(p[1] for p in parts)
    passes_an = len(ckpts) * min(info.probe_size, len(data.y_train))
    passes_kd = cfg.student.epochs * len(data.y_train)
    print(f"threads {args.threads}, {len(ckpts)} checkpoints, probe set {info.probe_size}, "
          f"{len(data.y_train)} training samples, student {cfg.student.model} x {cfg.student.epochs} epochs")
    print(f"analyze 10 checkpoints : {t_an:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_info)})")
    print(f"  forward passes       : {fwd:7.2f} s  ({1000 * fwd / len(ckpts):.0f} ms per checkpoint)")
    print(f"  {'estimator (' + info.estimator + ')':21s}: {est:7.2f} s  ({1000 * est / len(ckpts):.0f} ms per checkpoint)")
    print(f"one distillation       : {kd:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_kd)})")
    print(f"teacher sample passes  : analysis {passes_an:,} vs distillation {passes_kd:,} "
          f"({passes_an / passes_kd:.3f})")
    print(f"ratio forwards / distill: {fwd / kd:.3f}  (a floor for any estimator)")
    print(f"ratio analyze / distill: {t_an / kd:.3f}  (target <= 0.05)")


if __name__ == "__main__":
    main()
