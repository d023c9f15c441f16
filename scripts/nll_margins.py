"""How far apart the validation split can tell the checkpoints of a finished study.

    python scripts/nll_margins.py runs/studies/blobs-noisy-s2 runs/studies/blobs-pair30

For every checkpoint of the study's trajectory it prints what `val-nll-1se` reads: the paired
difference d of its temperature-scaled validation NLL to the best checkpoint's, the standard
error SE of d, whether the rule ties it with the best (d <= SE), and ``n for d = SE``: the
number of validation samples at which this d would be one standard error, (std / d)^2, if the
per-sample spread stayed as measured. Beside them, the mean test accuracy of the students
distilled from that checkpoint, from the study's results.json.

It asks one question of a study: would a larger validation split have let the rule see the
difference between the checkpoints? Where d itself is near zero, no split of practical size
would. The validation records are read from the study's selection cache; a checkpoint whose
record is missing is computed again (one forward pass over the validation split).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ckptkd.config import StudyConfig, from_dict
from ckptkd.select.policies.validation import nll_margins
from ckptkd.study.runner import selection_context
from ckptkd.trajectory import Run


def margins(folder: Path) -> tuple[str, list[dict]]:
    results = json.loads((folder / "results.json").read_text())
    cfg = from_dict(StudyConfig, results["config"])
    seed = cfg.teacher_seeds[0]
    trajectory = Run(folder / "cells" / f"teacher/seed{seed}").checkpoints()
    ctx = selection_context(cfg, folder)  # the study's own selection inputs, read from its cache
    n = len(ctx.data.y_val)
    students = defaultdict(list)
    for s in results["students"]:
        if s["group"] == "ckpt":
            students[int(s["cell"].split("/")[1].removeprefix("ckpt-"))].append(s["acc"])
    rows = []
    for c, (d, se) in zip(trajectory, nll_margins(trajectory, ctx)):
        accs = students.get(c.epoch, [])
        # d = SE at n samples when d = std / sqrt(n), with std = SE * sqrt(n_val)
        rows.append({"epoch": c.epoch, "nll": ctx.val_metrics(c)["val_nll_ts"], "d": d, "se": se, "n_val": n,
                     "tied": d <= se, "n_for_d_eq_se": n * (se / d) ** 2 if d > 0 else None,
                     "student": 100 * sum(accs) / len(accs) if accs else None})
    return cfg.name, rows


def render(name: str, rows: list[dict]) -> str:
    lines = [f"### {name} ({rows[0]['n_val']} validation samples)", "",
             "| epoch | val NLL (T*) | d to the best | SE | tied with the best | n for d = SE | student acc |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        n = "best" if r["n_for_d_eq_se"] is None else f"{r['n_for_d_eq_se']:,.0f}"
        acc = "-" if r["student"] is None else f"{r['student']:.2f}"
        lines.append(f"| {r['epoch']} | {r['nll']:.4f} | {r['d']:.4f} | {r['se']:.4f} | "
                     f"{'yes' if r['tied'] else 'no'} | {n} | {acc} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="finished study folders")
    args = ap.parse_args()
    print("\n\n".join(render(*margins(f)) for f in args.studies))


if __name__ == "__main__":
    main()
