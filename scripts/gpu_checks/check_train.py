"""Check 2, the training paths on the device: ``train`` (``ckptkd train``, and ``fit`` seen from
inside), ``compile`` (``compile: true`` against eager) and ``torchrun``."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace

import torch

from ckptkd import CrossEntropy, Run, StageConfig, fit
from ckptkd.train import build_model

from .common import BATCH, pct
from .context import Context


def check_train(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev = ctx.p, ctx.device
    spec, data = ctx.spec("small"), ctx.data("small")
    out = ctx.work / "train_cli"
    ctx.subprocess([sys.executable, "-m", "ckptkd", "train", "--data", spec, "--model", p.teacher,
                    "--epochs", str(p.train_epochs), "--save-every", "1", "--batch-size", str(BATCH),
                    "--device", dev.type, "--out", str(out), "--quiet"])
    run = Run(out)
    last = run.metrics()[-1]
    fig["cli"] = {"checkpoints": len(run.checkpoints()), "complete": run.complete, "test_acc": last["test_acc"],
                  "train_loss": last["train_loss"], "samples_per_s": last["samples_per_s"]}
    # the same loop seen from inside: what the model receives, and in which dtype it computes
    seen = {"channels_last": set(), "dtype": set()}
    model = build_model(p.teacher, data, 0)

    def pre(module, inputs):
        if module.training:
            x = inputs[0]
            seen["channels_last"].add(x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                                      and not x.is_contiguous())

    def post(module, inputs, output):
        if module.training:
            seen["dtype"].add(str(output.dtype).replace("torch.", ""))

    hooks = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    try:
        fit(model, CrossEntropy(), data, StageConfig(model=p.teacher, epochs=1, batch_size=BATCH), seed=0,
            device=dev, progress=False)
    finally:
        for h in hooks:
            h.remove()
    want_cl = dev.type == "cuda" and data.x_train.dim() == 4
    want_dtype = "bfloat16" if dev.type == "cuda" else "float32"
    fig["inside"] = {"channels_last": sorted(seen["channels_last"]), "dtype": sorted(seen["dtype"]),
                     "expected_channels_last": want_cl, "expected_dtype": want_dtype}
    ok = (fig["cli"]["complete"] and fig["cli"]["checkpoints"] == p.train_epochs
          and math.isfinite(last["train_loss"]) and seen["channels_last"] == {want_cl}
          and seen["dtype"] == {want_dtype})
    return ok, (f"ckptkd train {p.teacher}: {last['samples_per_s']:.0f} samples/s, test acc {pct(last['test_acc'])}; "
                f"fit ran {'/'.join(sorted(seen['dtype']))}, channels_last {sorted(seen['channels_last'])} "
                f"(expected {want_dtype}, [{want_cl}])")


def check_compile(ctx: Context, fig: dict) -> tuple[bool, str]:
    import torch._dynamo

    p, dev, data = ctx.p, ctx.device, ctx.data("bench")
    stage = StageConfig(model=p.compile_model, epochs=p.compile_epochs, batch_size=BATCH)
    fig["steps"] = p.compile_epochs * math.ceil(len(data.x_train) / BATCH)
    fig["compile_disabled"] = bool(torch._dynamo.config.disable)  # TORCH_COMPILE_DISABLE=1: a dry run
    for name, compiled in (("eager", False), ("compiled", True)):
        model = build_model(stage.model, data, 0)
        t0 = time.perf_counter()
        rec = fit(model, CrossEntropy(), data, replace(stage, compile=compiled), seed=0, device=dev, progress=False)
        fig[name] = {"wall_s": round(time.perf_counter() - t0, 2), "last_epoch_samples_per_s": rec["samples_per_s"],
                     "train_loss": rec["train_loss"], "test_acc": rec["test_acc"]}
    e, c = fig["eager"], fig["compiled"]
    fig["speedup_last_epoch"] = c["last_epoch_samples_per_s"] / e["last_epoch_samples_per_s"]
    ok = math.isfinite(c["train_loss"])
    return ok, (f"{fig['steps']} steps of {p.compile_model}: compiled {c['last_epoch_samples_per_s']:.0f} vs eager "
                f"{e['last_epoch_samples_per_s']:.0f} samples/s (last epoch, x{fig['speedup_last_epoch']:.2f}), "
                f"wall {c['wall_s']:.0f} vs {e['wall_s']:.0f} s; test acc {pct(c['test_acc'])} vs {pct(e['test_acc'])}")


def check_torchrun(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev = ctx.p, ctx.device
    procs = [1] + ([2] if dev.type == "cuda" and torch.cuda.device_count() >= 2 else [])
    fig["runs"] = {}
    for n in procs:
        out = ctx.work / f"torchrun{n}"
        t0 = time.perf_counter()
        ctx.subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                        "-m", "ckptkd", "train", "--data", ctx.spec("small"), "--model", p.teacher,
                        "--epochs", "1", "--batch-size", str(BATCH), "--device", dev.type, "--out", str(out),
                        "--quiet"])
        run = Run(out)
        fig["runs"][n] = {"complete": run.complete, "test_acc": run.metrics()[-1]["test_acc"],
                          "wall_s": round(time.perf_counter() - t0, 1)}
    fig["syncbatchnorm_exercised"] = len(procs) > 1
    fig["syncbatchnorm_note"] = ("ran in 2 processes on 2 GPUs" if len(procs) > 1 else
                                 "not exercised: with one process parallel.world() is not distributed, so "
                                 "parallel.wrap neither converts BatchNorm nor wraps in DDP (and SyncBatchNorm "
                                 "is plain BatchNorm in a world of one); it needs 2 GPUs")
    ok = all(r["complete"] for r in fig["runs"].values())
    return ok, (", ".join(f"nproc {n}: test acc {pct(r['test_acc'])} in {r['wall_s']:.0f} s"
                          for n, r in fig["runs"].items())
                + f"; SyncBatchNorm {'ran' if len(procs) > 1 else 'not exercised (one process)'}")
