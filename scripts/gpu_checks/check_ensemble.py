"""Check 2, ``ensemble``: a 4-checkpoint teacher by vmap against the loop, which one
``ensemble="auto"`` takes, and a distillation with each and by the CLI."""
from __future__ import annotations

import contextlib
import math

import torch

from ckptkd import KDConfig, Run, StageConfig, Teacher, distill
from ckptkd.ensemble import use_vmap
from ckptkd.train import _autocast

from .common import BATCH, pct, strict_fp32
from .context import Context, cli

ENSEMBLE_TOL = 1e-3  # fp32 vmap vs loop, max |logit difference|


def ensemble_outputs(teacher: Teacher, x: torch.Tensor, device: torch.device, autocast: bool) -> torch.Tensor:
    """(K, N, C) member logits in batches, as ``fit`` feeds the teacher (channels_last on CUDA)."""
    out = []
    for i in range(0, len(x), BATCH):
        xb = x[i:i + BATCH].to(device)
        if device.type == "cuda" and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device) if autocast else contextlib.nullcontext():
            out.append(teacher.member_logits(xb).float().cpu())
    return torch.cat(out, dim=1)


def check_ensemble(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev, data = ctx.p, ctx.device, ctx.data("small")
    ckpts = ctx.ensemble_ckpts()
    teachers = {mode: Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, ensemble=mode).to(dev)
                for mode in ("loop", "vmap")}
    fig["members"] = len(ckpts)
    fig["auto_uses_vmap"] = use_vmap("auto", teachers["loop"].members, dev)
    x = data.x_train[:1024]
    with strict_fp32():
        fp32 = {m: ensemble_outputs(t, x, dev, autocast=False) for m, t in teachers.items()}
    fig["fp32_max_abs_diff"] = (fp32["loop"] - fp32["vmap"]).abs().max().item()
    bf16 = {m: ensemble_outputs(t, x, dev, autocast=True) for m, t in teachers.items()}
    fig["autocast_max_abs_diff"] = (bf16["loop"] - bf16["vmap"]).abs().max().item()
    fig["vmap_stacked"] = teachers["vmap"]._stacked is not None and teachers["loop"]._stacked is None
    stage = StageConfig(model=p.student, epochs=1, batch_size=BATCH)
    fig["student_acc"] = {}
    for mode, teacher in teachers.items():
        _, rec = distill(data, stage, teacher, KDConfig(), seed=1, device=dev, progress=False)
        fig["student_acc"][mode] = rec["test_acc"]
    out = ctx.work / "distill_cli"
    cli("distill", "--data", ctx.spec("small"), *[a for c in ckpts for a in ("--teacher", str(c.path))],
        "--model", p.student, "--epochs", "1", "--batch-size", str(BATCH), "--device", dev.type, "--out", str(out),
        "--quiet")
    fig["student_acc"]["cli_auto"] = Run(out).metrics()[-1]["test_acc"]
    ok = (fig["fp32_max_abs_diff"] <= ENSEMBLE_TOL and fig["auto_uses_vmap"] == (dev.type == "cuda")
          and fig["vmap_stacked"] and all(math.isfinite(a) for a in fig["student_acc"].values()))
    s = fig["student_acc"]
    return ok, (f"{len(ckpts)} checkpoints, vmap vs loop max |diff| fp32 {fig['fp32_max_abs_diff']:.1e} "
                f"(max {ENSEMBLE_TOL:g}), autocast {fig['autocast_max_abs_diff']:.1e}; auto uses vmap: "
                f"{fig['auto_uses_vmap']}; student acc loop {pct(s['loop'])}, vmap {pct(s['vmap'])}, "
                f"CLI {pct(s['cli_auto'])}")
