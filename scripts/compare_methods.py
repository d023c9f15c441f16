"""The student-vs-checkpoint curve of one study under several distillation methods, side by side.

    python scripts/compare_methods.py runs/studies/blobs-noisy-methods-kd runs/studies/blobs-noisy-methods-dkd

Each folder is a finished ``ckptkd study`` of the same config with another ``kd.method``
(``--method``); the teacher trajectory must be the same (same teacher cells). Prints a
markdown table: per checkpoint the teacher's test accuracy and each method's student
(mean ± std over student seeds), the best checkpoint under each method, its margin over the
last checkpoint's student, the seed noise, and the Spearman correlation of the curves.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ckptkd.report.study import checkpoint_rows, fmt, groups, method_label, noise, spearman
from ckptkd.study.runner import load_results


def comparison(studies: list[str]) -> str:
    """The markdown table and lines that ``main`` prints, for the study folders ``studies``."""
    results = [load_results(s) for s in studies]
    rows = [checkpoint_rows(r) for r in results]
    epochs = [r["epoch"] for r in rows[0]]
    if any([r["epoch"] for r in rs] != epochs for rs in rows) or any(
            [r["teacher_acc"] for r in rs] != [r["teacher_acc"] for r in rows[0]] for rs in rows):
        raise SystemExit("the studies do not share one teacher trajectory")
    out = []
    print = out.append  # noqa: A001 - the lines below read as the table they write
    labels = [method_label(r["config"]) for r in results]
    short = [r["config"]["kd"].get("method", "kd") for r in results]
    if len(set(labels)) < len(labels):  # one method run twice (another code version): name the folders
        labels = [f"{m} [{Path(f).name}]" for m, f in zip(labels, studies)]
        short = [Path(f).name for f in studies]
    print("| checkpoint epoch | teacher test acc | " + " | ".join(f"student, {m}" for m in labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    best = [max(rs, key=lambda r: r["student_mean"]) for rs in rows]
    for i, e in enumerate(epochs):
        cells = []
        for rs, b in zip(rows, best):
            text = fmt(rs[i]["student_mean"], rs[i]["student_std"])
            cells.append(f"**{text}**" if rs[i] is b else text)
        print(f"| {e} | {100 * rows[0][i]['teacher_acc']:.2f} | " + " | ".join(cells) + " |")
    g = [groups(r) for r in results]
    print("| no KD | - | " + " | ".join(fmt(x["nokd"]["mean"], x["nokd"]["std"]) for x in g) + " |")
    print("")
    for m, rs, b, r in zip(labels, rows, best, results):
        print(f"- {m}: best checkpoint epoch {b['epoch']} ({100 * b['student_mean']:.2f}), "
              f"{100 * (b['student_mean'] - rs[-1]['student_mean']):+.2f} over the last checkpoint's student; "
              f"seed noise {100 * noise(r):.2f}")
    for j in range(1, len(rows)):
        rho = spearman([r["student_mean"] for r in rows[0]], [r["student_mean"] for r in rows[j]])
        print(f"- Spearman ρ of the curves, {short[0]} vs {short[j]}: {rho:.2f}")
    same = len({b["epoch"] for b in best}) == 1
    print(f"- The best checkpoint is {'the same' if same else 'not the same'} under "
          + ", ".join(short) + ": " + ", ".join(f"epoch {b['epoch']}" for b in best) + ".")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", nargs="+", help="study folders (one per method)")
    print(comparison(p.parse_args().studies))


if __name__ == "__main__":
    main()
