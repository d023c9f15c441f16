"""Distillation epoch time: with the teacher cache, against plain cross-entropy and against
recomputing every teacher on every batch (the official code's loop); and Decoupled KD
(``--method dkd``'s loss, ``ckptkd.distill.dkd``) from the same cache against cross-entropy.

Each ratio is a duel run in this one process: the two sides train a fresh student for
``--epochs`` epochs each with ``fit`` (per-epoch test evaluation included, the same for
both), back to back, alternating which goes first, for ``--rounds`` rounds after an
untimed warm-up. A ratio is the median of the per-round ratios, so a change in the
machine's load hits both of its sides alike; times are medians, in seconds per epoch, as
CPU time of this process (what the work costs) and as wall time. The teacher is trained
here for a few epochs and saved as checkpoints, so the cache is keyed and read as in
``ckptkd distill --cache-dir``; its build time is reported on its own, and amortised over
1 and 10 students.

    python benchmarks/bench_distill.py                      # cnn1d_l teacher, cnn1d_xs student
    python benchmarks/bench_distill.py --teacher cnn1d_m --student cnn1d_s

Also checks that the cached and the recomputed student of the last round are identical.
The DKD/CE duel runs in the same process, after KD's, with ``--dkd-rounds`` rounds.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ckptkd import KD, CrossEntropy, DataConfig, KDConfig, Run, StageConfig, Teacher, fit, load_dataset, train
from ckptkd.distill import DKD
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
    dkd = dataclasses.replace(kd, method="dkd")
    sides = {"ce": CrossEntropy, "cache": lambda: KD(teacher, kd, cache), "recompute": lambda: KD(teacher, kd),
             "dkd": lambda: DKD(teacher, dkd, cache)}
    students = {}

    def duel(a: str, b: str, rounds: int) -> dict:
        """Median seconds per epoch of sides ``a`` and ``b``, and the median of the per-round
        ratios b/a (each round runs both back to back, alternating which goes first, so a
        change in the machine's load hits both sides of a ratio alike)."""
        for name in (a, b):
            epoch_seconds(sides[name], data, dataclasses.replace(stage, epochs=1))  # warm-up, untimed
        times = {a: [], b: []}
        for r in range(rounds):
            for name in ((a, b) if r % 2 == 0 else (b, a)):
                seconds, students[name] = epoch_seconds(sides[name], data, stage)
                times[name].append(seconds)
        return {clock: {**{n: statistics.median(t[clock] for t in v) for n, v in times.items()},
                        "ratio": statistics.median(tb[clock] / ta[clock] for ta, tb in zip(times[a], times[b]))}
                for clock in CLOCKS}

    # two duels rather than one three-way rotation: a side that runs right after the
    # teacher-heavy recompute side starts with cold CPU caches, which would bias CE vs cache
    vs_ce = duel("ce", "cache", args.rounds)
    vs_recompute = duel("cache", "recompute", max(3, args.rounds // 3))  # a 4-10x ratio needs fewer rounds
    # callers that build their own args (scripts/gpu_check.py) and name no dkd_rounds skip DKD
    dkd_rounds = getattr(args, "dkd_rounds", None)
    dkd_vs_ce = duel("ce", "dkd", dkd_rounds or args.rounds) if dkd_rounds is not None else None
    a, b = students["cache"].state_dict(), students["recompute"].state_dict()
    return {"k": len(ckpts), "identical": all(torch.equal(a[n], b[n]) for n in a),
            **{clock: {"build": build[clock], "ce": vs_ce[clock]["ce"], "cache": vs_ce[clock]["cache"],
                       "cache/ce": vs_ce[clock]["ratio"], "cache_2": vs_recompute[clock]["cache"],
                       "recompute": vs_recompute[clock]["recompute"], "recompute/cache": vs_recompute[clock]["ratio"],
                       **({"ce_3": dkd_vs_ce[clock]["ce"], "dkd": dkd_vs_ce[clock]["dkd"],
                           "dkd/ce": dkd_vs_ce[clock]["ratio"]} if dkd_vs_ce else {})}
               for clock in CLOCKS}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="cnn1d_l")
    p.add_argument("--student", default="cnn1d_xs")
    p.add_argument("--samples", type=int, default=5000, help="MNIST-1D samples (80%% train)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per timed student (and views cached)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15, help="rounds of CE vs cache (a third of them: vs recompute)")
    p.add_argument("--dkd-rounds", type=int, default=0, help="rounds of CE vs DKD from the cache (0: --rounds)")
    p.add_argument("--teacher-epochs", type=int, default=4, help="teacher training epochs (>= 4: the ensemble)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(DataConfig(spec="mnist1d", num_samples=args.samples))
    ft, fs = flops(args.teacher, data), flops(args.student, data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    print(f"MNIST-1D {len(data.x_train)} train samples, augment {data.augment}, batch {args.batch_size}, "
          f"{args.epochs} epochs per timed student")
    print(f"teacher {args.teacher} {ft / 1e6:.2f} MFLOPs/sample, student {args.student} {fs / 1e6:.3f} MFLOPs/sample "
          f"(teacher/student {ft / fs:.1f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = teacher_checkpoints(Path(tmp) / "teacher", data, args.teacher, 4, args.teacher_epochs)[-4:]
        rows = [bench(data, ckpts[-k:], args, Path(tmp) / "cache") for k in (1, 4)]
    for clock in CLOCKS:
        print(f"\n{clock} seconds per epoch (medians); ratios: median of per-round ratios; "
              f"build: the cache, once, for {args.epochs} views")
        print(f"{'teachers':>8} {'CE':>8} {'cache':>8} {'cache/CE':>9} | {'cache':>8} {'recompute':>10} "
              f"{'recompute/cache':>16} | {'build':>7} {'incl. build, 1 student':>22} {'10 students':>11}")
        for row in rows:
            r = row[clock]
            def incl_build(students: int) -> float:  # recompute / cache, the build shared by the students
                return students * r["recompute"] / (r["build"] / args.epochs + students * r["cache_2"])
            print(f"{row['k']:>8} {r['ce']:>8.4f} {r['cache']:>8.4f} {r['cache/ce']:>9.3f} | "
                  f"{r['cache_2']:>8.4f} {r['recompute']:>10.4f} {r['recompute/cache']:>15.2f}x | "
                  f"{r['build']:>7.2f} {incl_build(1):>21.2f}x {incl_build(10):>10.2f}x")
    for clock in CLOCKS:
        print(f"\n{clock} seconds per epoch, DKD (kd.dkd defaults) from the same cache, its own duel against CE")
        print(f"{'teachers':>8} {'CE':>8} {'DKD':>8} {'DKD/CE':>9} | {'KD cache/CE (above)':>20}")
        for row in rows:
            r = row[clock]
            print(f"{row['k']:>8} {r['ce_3']:>8.4f} {r['dkd']:>8.4f} {r['dkd/ce']:>9.3f} | {r['cache/ce']:>20.3f}")
    print(f"\ncached student identical to recomputed student: {', '.join(str(r['identical']) for r in rows)}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
