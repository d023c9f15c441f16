"""Check 1, ``cpu_vs_cuda``: the small teacher's last checkpoint evaluated on CPU and on the
device (fp32 with TF32 off, CUDA's defaults, bf16 autocast); without CUDA, the CPU half only."""
from __future__ import annotations

import torch

from ckptkd import load_model
from ckptkd.train import evaluate

from .common import compare, logits_of, pct, strict_fp32
from .context import Context

AGREEMENT_MIN = 0.999  # fp32 argmax agreement CPU vs CUDA (the issue's bar)


def cpu_half(ctx: Context, fig: dict) -> torch.Tensor:
    """Train the teacher on CPU and evaluate its last checkpoint there; the CPU logits."""
    data = ctx.data("small")
    run = ctx.teacher_run()
    ckpt = run.checkpoints()[-1]
    model = load_model(ckpt, data.num_classes, data.in_shape)
    cpu = logits_of(model, data.x_test, torch.device("cpu"))
    acc = (cpu.argmax(1) == data.y_test).double().mean().item()
    fig.update(model=ctx.p.teacher, n_train=len(data.x_train), n_test=len(data.x_test), classes=data.num_classes,
               checkpoints=len(run.checkpoints()), checkpoint_epoch=ckpt.epoch,
               teacher_train_s=round(ctx._memo.get("teacher_train_s", float("nan")), 2),
               cpu_test_acc=acc, cpu_logits_finite=bool(torch.isfinite(cpu).all()),
               # the logits here and ckptkd's own evaluate must agree on the accuracy
               cpu_acc_matches_evaluate=abs(acc - evaluate(model, data.x_test, data.y_test)["acc"]) < 1e-12)
    return cpu


def check_cpu_half_only(ctx: Context, fig: dict) -> tuple[bool, str]:
    cpu_half(ctx, fig)
    ok = fig["cpu_logits_finite"] and fig["cpu_acc_matches_evaluate"] and fig["checkpoints"] >= 4
    return ok, (f"CPU half only: {fig['model']} trained on CPU in {fig['teacher_train_s']} s, "
                f"test acc {pct(fig['cpu_test_acc'])} on {fig['n_test']} images")


def check_cpu_vs_cuda(ctx: Context, fig: dict) -> tuple[bool, str]:
    cpu = cpu_half(ctx, fig)
    data, dev = ctx.data("small"), ctx.device
    model = load_model(ctx.teacher_run().checkpoints()[-1], data.num_classes, data.in_shape)
    with strict_fp32():
        fig["fp32"] = compare(cpu, logits_of(model, data.x_test, dev))
    fig["cuda_defaults"] = compare(cpu, logits_of(model, data.x_test, dev))  # TF32 convolutions on CUDA
    fig["bf16"] = compare(cpu, logits_of(model, data.x_test, dev, autocast=True))
    fig["max_abs_logit"] = cpu.abs().max().item()
    fig["autocast"] = "bf16" if dev.type == "cuda" else "none (CPU)"
    ok = fig["fp32"]["argmax_agreement"] >= AGREEMENT_MIN and fig["cpu_logits_finite"]
    f, d, b = fig["fp32"], fig["cuda_defaults"], fig["bf16"]
    return ok, (f"fp32 argmax agreement {pct(f['argmax_agreement'])} (min {pct(AGREEMENT_MIN)}), max |dlogit| "
                f"{f['max_abs_diff']:.1e}; defaults {pct(d['argmax_agreement'])} / {d['max_abs_diff']:.1e}; "
                f"bf16 {pct(b['argmax_agreement'])} / {b['max_abs_diff']:.1e} (|logit| <= {fig['max_abs_logit']:.1f})")
