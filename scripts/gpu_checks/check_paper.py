"""Check 4, ``paper``: wrn_40_2 -> wrn_40_1 on a synthetic CIFAR-100-format set, ``ckptkd
analyze``, ``select`` and one distillation per policy; it stops at the time limit."""
from __future__ import annotations

import json
import time

from ckptkd import Run

from .common import BATCH, pct
from .context import Context, cli


def check_paper(ctx: Context, fig: dict) -> tuple[bool, str]:
    from ckptkd.select import POLICIES

    p, dev = ctx.p, ctx.device
    spec, data = ctx.spec("c100"), ctx.data("c100")
    run = ctx.work / "paper" / "teacher"
    save_every = max(1, p.paper_epochs // 4)
    fig.update(teacher=p.paper_teacher, student=p.paper_student, n_train=len(data.x_train), classes=data.num_classes,
               teacher_epochs=p.paper_epochs, student_epochs=p.paper_student_epochs, finished=[])
    t0 = time.perf_counter()
    cli("train", "--data", spec, "--model", p.paper_teacher, "--epochs", str(p.paper_epochs), "--save-every",
        str(save_every), "--batch-size", str(BATCH), "--device", dev.type, "--out", str(run), "--quiet")
    fig["teacher_s"] = round(time.perf_counter() - t0, 1)
    fig["teacher_acc"] = Run(run).metrics()[-1]["test_acc"]
    fig["finished"].append("train")
    t0 = time.perf_counter()
    rows = json.loads(cli("analyze", str(run), "--device", dev.type, "--probe-size", str(p.paper_probe), "--quiet",
                          "--json"))["rows"]
    fig["analyze_s"] = round(time.perf_counter() - t0, 1)
    fig["scores"] = {r["epoch"]: round(r["score"], 4) for r in rows}
    fig["finished"].append("analyze")
    fig["policies"] = {}
    for policy in POLICIES:
        if ctx.remaining() < 0:
            fig["policies"][policy] = {"skipped": "time limit"}
            continue
        if POLICIES[policy].takes_epochs:  # explicit: the user's epochs, nothing to choose
            fig["policies"][policy] = {"skipped": "takes the user's epochs"}
            continue
        # each policy gets the flags of the inputs it reads (select refuses the others): the probe
        # size for the information policies, the student settings for proxy's short distillations
        needs = POLICIES[policy].needs
        flags = (["--device", dev.type] if needs else []) + (
            ["--probe-size", str(p.paper_probe)] if "analysis" in needs else []) + (
            ["--student-model", p.paper_student, "--student-epochs", str(p.paper_student_epochs)]
            if "proxy" in needs else [])
        try:
            chosen = json.loads(cli("select", str(run), "--policy", policy, *flags, "--quiet", "--json"))["chosen"]
        except RuntimeError as e:  # a policy may refuse this run (exit 2: e.g. proxy-full on the tiny profile's data)
            if "exited 2:" not in str(e):
                raise
            fig["policies"][policy] = {"skipped": "refused: " + str(e).split("error: ", 1)[-1]}
            continue
        out = ctx.work / "paper" / f"student-{policy}"
        t0 = time.perf_counter()
        cli("distill", "--data", spec, *[a for c in chosen for a in ("--teacher", c["path"])], "--model",
            p.paper_student, "--epochs", str(p.paper_student_epochs), "--batch-size", str(BATCH), "--device",
            dev.type, "--out", str(out), "--quiet")
        fig["policies"][policy] = {"epochs": [c["epoch"] for c in chosen],
                                   "student_acc": Run(out).metrics()[-1]["test_acc"],
                                   "seconds": round(time.perf_counter() - t0, 1)}
        fig["finished"].append(f"distill {policy}")
    done = {k: v for k, v in fig["policies"].items() if "student_acc" in v}
    return bool(done), (f"{p.paper_teacher} -> {p.paper_student}, {data.num_classes} classes: teacher acc "
                        f"{pct(fig['teacher_acc'])} in {fig['teacher_s']:.0f} s, analyze {fig['analyze_s']:.0f} s; "
                        + ", ".join(f"{k} epochs {v['epochs']} -> {pct(v['student_acc'])}" for k, v in done.items())
                        + "".join(f"; {k}: {v['skipped']}" for k, v in fig["policies"].items() if "skipped" in v))
