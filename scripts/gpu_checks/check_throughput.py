"""Check 3, ``throughput``: KD samples/s with and without the cache against CE, and snapshot
ensembles by the loop against vmap, with the code of benchmarks/bench_distill.py and bench_vmap.py."""
from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import torch

from ckptkd import KD, KDConfig, StageConfig, Teacher, fit, train
from ckptkd.teacher_cache import TeacherCache
from ckptkd.train import _autocast

from .common import BATCH, REPO, sync
from .context import Context


@contextlib.contextmanager
def on_device(bench_distill, device: torch.device):
    """benchmarks/bench_distill.py trains and builds on the CPU (its calls name no device):
    bind its ``fit``, ``train``, ``Teacher`` and ``TeacherCache`` to ``device`` for this check."""
    names = ("fit", "train", "Teacher", "TeacherCache")
    saved = {n: getattr(bench_distill, n) for n in names}
    bench_distill.fit = partial(fit, device=device)
    bench_distill.train = partial(train, device=device)
    bench_distill.Teacher = types.SimpleNamespace(
        from_checkpoints=lambda *a, **k: Teacher.from_checkpoints(*a, **k).to(device))
    bench_distill.TeacherCache = types.SimpleNamespace(build=partial(TeacherCache.build, device=device))
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(bench_distill, n, v)


def duel(a, b, rounds: int) -> dict:
    """Seconds of two zero-argument timed sides, alternating which goes first, after one
    untimed warm-up each; medians, and the median of the per-round ratios b / a."""
    a(), b()
    times = {"a": [], "b": []}
    for r in range(rounds):
        for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
            times[side].append({"a": a, "b": b}[side]())
    return {"a": statistics.median(times["a"]), "b": statistics.median(times["b"]),
            "ratio": statistics.median(tb / ta for ta, tb in zip(times["a"], times["b"]))}


def check_throughput(ctx: Context, fig: dict) -> tuple[bool, str]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_distill
    import bench_vmap

    p, dev, data = ctx.p, ctx.device, ctx.data("bench")
    n = len(data.x_train)
    fig.update(teacher=p.bench_teacher, student=p.bench_student, n_train=n, n_test=len(data.x_test), batch=BATCH,
               epochs_per_side=p.bench_epochs, rounds=p.bench_rounds, clock="wall")
    # 1. one teacher: CE, KD reading the cache, KD recomputing the teacher (bench_distill's duels)
    args = types.SimpleNamespace(student=p.bench_student, epochs=p.bench_epochs, batch_size=BATCH,
                                 rounds=p.bench_rounds)
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp, on_device(bench_distill, dev):
        ckpts = bench_distill.teacher_checkpoints(Path(tmp) / "teacher", data, p.bench_teacher, 1, 1)
        r = bench_distill.bench(data, ckpts, args, Path(tmp) / "cache")
    w = r["wall"]
    fig["kd"] = {"samples_per_s": {"ce": n / w["ce"], "kd_cache": n / w["cache"], "kd_recompute": n / w["recompute"]},
                 "kd_cache/ce": w["cache/ce"], "kd_recompute/kd_cache": w["recompute/cache"],
                 "cache_build_s": w["build"], "students_identical": r["identical"]}
    # 2. snapshot ensembles of K random-init members: teacher forwards and KD epochs, loop vs vmap
    stage = StageConfig(model=p.bench_student, epochs=p.bench_epochs, batch_size=BATCH)
    fig["ensembles"] = {}
    for k in p.bench_ks:
        if ctx.remaining() < 0:
            fig["ensembles"][k] = "skipped: time limit"
            continue
        members = [m.to(dev) for m in bench_vmap.members(p.bench_teacher, k, data.in_shape)]
        row = {}
        for batch in p.forward_batches:
            # the training batch as fit feeds the teacher (bf16, channels_last); bigger: the cache build's (fp32)
            training = batch == BATCH
            x = data.x_train[:batch].to(dev)
            if training and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            teachers = {mode: Teacher(members, ensemble=mode) for mode in ("loop", "vmap")}

            def forward(mode, x=x, teachers=teachers, training=training):
                def run():
                    with _autocast(dev) if training else contextlib.nullcontext():
                        teachers[mode].member_logits(x)
                    sync(dev)
                return lambda: bench_vmap.timed(lambda _: run(), x, 5)["wall"]

            d = duel(forward("loop"), forward("vmap"), max(3, p.bench_rounds))
            row[f"forward_b{batch}"] = {"loop_ms": 1e3 * d["a"], "vmap_ms": 1e3 * d["b"], "vmap/loop": d["ratio"],
                                        "autocast": training}
        teachers = {mode: Teacher(members, ensemble=mode) for mode in ("loop", "vmap")}
        kd = {mode: (lambda mode=mode: bench_distill.epoch_seconds(lambda: KD(teachers[mode], KDConfig()), data,
                                                                   stage)[0]["wall"]) for mode in teachers}
        with on_device(bench_distill, dev):
            d = duel(kd["loop"], kd["vmap"], p.bench_rounds)
        row["kd_recompute"] = {"loop_samples_per_s": n / d["a"], "vmap_samples_per_s": n / d["b"],
                               "vmap/loop_time": d["ratio"]}
        fig["ensembles"][k] = row
    kd_ = fig["kd"]
    ens = "; ".join(f"K={k} forward vmap/loop {v[f'forward_b{p.forward_batches[0]}']['vmap/loop']:.2f}, KD time "
                    f"vmap/loop {v['kd_recompute']['vmap/loop_time']:.2f}" for k, v in fig["ensembles"].items()
                    if isinstance(v, dict))
    s = kd_["samples_per_s"]
    return True, (f"{p.bench_teacher} -> {p.bench_student} samples/s CE {s['ce']:.0f}, KD+cache {s['kd_cache']:.0f}, "
                  f"KD recompute {s['kd_recompute']:.0f}; cache/CE {kd_['kd_cache/ce']:.3f}, recompute/cache "
                  f"{kd_['kd_recompute/kd_cache']:.2f}; {ens}")
