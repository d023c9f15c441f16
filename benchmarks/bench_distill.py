"""Distillation epoch time: with the teacher cache, against plain cross-entropy and against
recomputing every teacher on every batch (the official code's loop).

Both sides of each ratio run in this one process, alternated round by round; each figure
is the median over rounds. A round trains a fresh student for ``--epochs`` epochs with
``fit`` (per-epoch test evaluation included, the same for every side) and reports seconds
per epoch, as CPU time of this process (what the work costs; robust to other processes
on a shared machine) and as wall time. The teacher is trained here for a few epochs and saved as checkpoints, so the
cache is keyed and read exactly as in ``ckptkd distill --cache-dir``.

    python benchmarks/bench_distill.py                      # cnn1d_l teacher, cnn1d_xs student
    python benchmarks/bench_distill.py --student cnn1d_s --teacher cnn1d_m

Prints the FLOPs of both models, the times, the ratios, and whether the cached and the
recomputed student of the last round are identical (they must be).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ckptkd import KD, CrossEntropy, DataConfig, KDConfig, Run, StageConfig, Teacher, fit, load_dataset, train
from ckptkd.teacher_cache import TeacherCache
from ckptkd.train import build_model


CLOCKS = ("cpu", "wall")


def flops(spec: str, data) -> int:
    model = build_model(spec, data, 0).eval()
    with FlopCounterMode(display=False) as counter:
        model(data.x_train[:1])
    return counter.get_total_flops()


def teacher_checkpoints(folder: Path, data, spec: str, k: int, epochs: int):
    """``k`` checkpoints of one ``spec`` teacher run (its last ``k`` epochs)."""
    stage = StageConfig(model=spec, epochs=epochs, save_every=1)
    run = Run.create(folder, {"bench": spec}, model=spec, num_classes=data.num_classes, in_shape=data.in_shape,
                     data_fingerprint=data.fingerprint)
    train(data, stage, seed=0, run=run, progress=False)
    return run.checkpoints()


def epoch_seconds(method_factory, data, stage: StageConfig) -> tuple[dict, torch.nn.Module]:
    student = build_model(stage.model, data, seed=1)
    wall, cpu = time.perf_counter(), time.process_time()
    fit(student, method_factory(), data, stage, seed=1, progress=False)
    return {"cpu": (time.process_time() - cpu) / stage.epochs,
            "wall": (time.perf_counter() - wall) / stage.epochs}, student


def bench(data, ckpts, args, cache_dir: Path) -> dict:
    kd = KDConfig()
    stage = StageConfig(model=args.student, epochs=args.epochs, batch_size=args.batch_size)
    teacher = Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, kd.combine)
    wall, cpu = time.perf_counter(), time.process_time()
    cache = TeacherCache.build(cache_dir, teacher, data, kd.temperature, views=args.epochs)
    build = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
    sides = {"ce": CrossEntropy, "cache": lambda: KD(teacher, kd, cache), "recompute": lambda: KD(teacher, kd)}
    students = {}

    def duel(a: str, b: str) -> dict:
        """Median seconds per epoch of sides ``a`` and ``b``, alternating which goes first."""
        times = {a: [], b: []}
        for r in range(args.rounds):
            for name in ((a, b) if r % 2 == 0 else (b, a)):
                seconds, students[name] = epoch_seconds(sides[name], data, stage)
                times[name].append(seconds)
        return {clock: {n: statistics.median(t[clock] for t in v) for n, v in times.items()} for clock in CLOCKS}

    # two duels rather than one three-way rotation: a side that runs right after the
    # teacher-heavy recompute side starts with cold CPU caches, which would bias CE vs cache
    vs_ce, vs_recompute = duel("ce", "cache"), duel("cache", "recompute")
    a, b = students["cache"].state_dict(), students["recompute"].state_dict()
    return {"k": len(ckpts), "identical": all(torch.equal(a[n], b[n]) for n in a),
            **{clock: {"build": build[clock], "ce": vs_ce[clock]["ce"], "cache": vs_ce[clock]["cache"],
                       "recompute": vs_recompute[clock]["recompute"], "cache_2": vs_recompute[clock]["cache"]}
               for clock in CLOCKS}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="cnn1d_l")
    p.add_argument("--student", default="cnn1d_xs")
    p.add_argument("--samples", type=int, default=5000, help="MNIST-1D samples (80%% train)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per timed student (and views cached)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--teacher-epochs", type=int, default=4, help="teacher training epochs (>= 4: the ensemble)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(DataConfig(spec="mnist1d", num_samples=args.samples))
    ft, fs = flops(args.teacher, data), flops(args.student, data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    print(f"MNIST-1D {len(data.x_train)} train samples, augment {data.augment}, batch {args.batch_size}, "
          f"{args.epochs} epochs x {args.rounds} rounds")
    print(f"teacher {args.teacher} {ft / 1e6:.2f} MFLOPs/sample, student {args.student} {fs / 1e6:.3f} MFLOPs/sample "
          f"(teacher/student {ft / fs:.1f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = teacher_checkpoints(Path(tmp) / "teacher", data, args.teacher, 4, args.teacher_epochs)[-4:]
        rows = [bench(data, ckpts[-k:], args, Path(tmp) / "cache") for k in (1, 4)]
    for clock in CLOCKS:
        print(f"\n{clock} seconds per epoch (median of {args.rounds}); build: the cache, once, for {args.epochs} views")
        print(f"{'teachers':>8} {'CE':>8} {'cache':>8} {'cache/CE':>9} | {'cache':>8} {'recompute':>10} "
              f"{'recompute/cache':>16} | {'build':>7} {'1 student incl. build':>22}")
        for row in rows:
            r = row[clock]
            one_student = r["recompute"] * args.epochs / (r["build"] + r["cache_2"] * args.epochs)
            print(f"{row['k']:>8} {r['ce']:>8.4f} {r['cache']:>8.4f} {r['cache'] / r['ce']:>9.3f} | "
                  f"{r['cache_2']:>8.4f} {r['recompute']:>10.4f} {r['recompute'] / r['cache_2']:>15.2f}x | "
                  f"{r['build']:>7.2f} {one_student:>21.2f}x")
    print(f"\ncached student identical to recomputed student: {', '.join(str(r['identical']) for r in rows)}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
