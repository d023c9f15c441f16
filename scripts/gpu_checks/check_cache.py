"""Check 2, ``cache``: the teacher cache built on the device, the cached student rebuilt bit for
bit, and the cached targets against those of the teacher run in the loop."""
from __future__ import annotations

import time

import torch

from ckptkd import KD, KDConfig, StageConfig, Teacher, distill, fit
from ckptkd.teacher_cache import TeacherCache
from ckptkd.train import build_model

from .common import BATCH, deterministic, first_line, pct, same_weights
from .context import Context

# Cached targets (fp32 teacher, cache build) against the targets the loop computes (teacher
# under bf16 autocast): log-probabilities at T. bf16 keeps 8 bits of mantissa, so logits of
# magnitude 10-20 move by up to ~0.1-0.2 after a dozen layers, a few hundredths after /T and
# log_softmax. A cache serving the wrong rows (another view, another sample) is off by
# nats, not hundredths, on average.
TARGET_TOL = {"max": 0.5, "mean": 0.05}


class CompareTargets(KD):
    """KD from the cache that also runs the teacher on every batch, exactly where ``KD``
    without a cache would, and records how far the two targets are apart."""

    def __init__(self, teacher, cfg, cache):
        super().__init__(teacher, cfg, cache)
        self.max, self.sum, self.count, self.missing = 0.0, 0.0, 0, 0

    def __call__(self, model, x, y, idx, epoch):
        with torch.no_grad():
            fresh = self.teacher.log_probs(x, self.cfg.temperature).float()
            cached = self.cache.log_probs(idx, epoch, self.cfg.temperature)
            if cached is None:
                self.missing += 1
            else:
                diff = (cached.to(x.device) - fresh).abs()
                self.max = max(self.max, diff.max().item())
                self.sum += diff.sum().item()
                self.count += diff.numel()
        return super().__call__(model, x, y, idx, epoch)


def check_cache(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev, data = ctx.p, ctx.device, ctx.data("small")
    kd = KDConfig()
    teacher = Teacher.from_checkpoints(ctx.ensemble_ckpts(), data.num_classes, data.in_shape).to(dev)
    stage = StageConfig(model=p.student, epochs=p.student_epochs, batch_size=BATCH)
    folder = ctx.work / "cache"
    with deterministic() as caught:
        t0 = time.perf_counter()
        cache = TeacherCache.build(folder, teacher, data, kd.temperature, views=stage.epochs, device=dev)
        fig["build_s"] = round(time.perf_counter() - t0, 3)
        fig["views"] = cache.views
        recorder = CompareTargets(teacher, kd, cache)
        a = build_model(stage.model, data, 1)  # what distill(seed=1) starts from
        rec_a = fit(a, recorder, data, stage, seed=1, device=dev, progress=False)
        b, rec_b = distill(data, stage, teacher, kd, seed=1, device=dev, progress=False)
        # the public path again: reopens the entry (and spot-checks it) on the device
        c, rec_c = distill(data, stage, teacher, kd, seed=1, device=dev, progress=False, cache_dir=folder)
    fig["deterministic_warnings"] = sorted({first_line(w.message) for w in caught
                                            if "deterministic" in str(w.message).lower()})[:5]
    fig["targets"] = {"max_abs_diff": recorder.max, "mean_abs_diff": recorder.sum / max(recorder.count, 1),
                      "batches_missing_from_cache": recorder.missing}
    fig["rerun_identical"], _ = same_weights(a, c)
    fig["vs_no_cache_identical"], fig["vs_no_cache_max_weight_diff"] = same_weights(a, b)
    fig["test_acc"] = {"cache": rec_a["test_acc"], "no_cache": rec_b["test_acc"], "cache_rerun": rec_c["test_acc"]}
    t = fig["targets"]
    close = t["max_abs_diff"] <= TARGET_TOL["max"] and t["mean_abs_diff"] <= TARGET_TOL["mean"]
    rule = f"targets within max {TARGET_TOL['max']}, mean {TARGET_TOL['mean']} of the loop's"
    if dev.type == "cpu":  # both teachers compute in float32 here: the students must be identical
        close, rule = close and fig["vs_no_cache_identical"], rule + "; identical to the no-cache student"
    fig["rule"] = rule
    ok = fig["rerun_identical"] and close and t["batches_missing_from_cache"] == 0
    return ok, (f"built in {fig['build_s']:.1f} s; cached targets vs loop max {t['max_abs_diff']:.1e}, mean "
                f"{t['mean_abs_diff']:.1e}; rerun bit-identical {fig['rerun_identical']}; vs no-cache student: "
                f"identical {fig['vs_no_cache_identical']}, max |dw| {fig['vs_no_cache_max_weight_diff']:.1e}, "
                f"acc {pct(rec_a['test_acc'])} vs {pct(rec_b['test_acc'])} (rule: {rule})")
