"""The study's tables (mean ± std over student seeds) and plots, from results.json alone.

Tables follow the paper: full vs intermediate teacher (its Table 1), full vs snapshot
ensemble (its Table 2), plus the selection table that measures Algorithm 1 and every other
scoring rule against the best checkpoint in hindsight.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

from ..io import atomic_write
from ..select.picks import halfway_epoch


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (nan when a side is constant)."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def groups(results: dict) -> dict[str, dict]:
    """Student results by group (``nokd``, ``ckpt-0012``, ``ens-full``, ...): accuracies over seeds."""
    by = defaultdict(list)
    for r in results["students"]:
        by[r["cell"].split("/")[1]].append(r)
    out = {}
    for name, rs in by.items():
        m, s = mean_std([r["acc"] for r in rs])
        out[name] = {"mean": m, "std": s, "n": len(rs), "teacher_acc": rs[0].get("teacher_acc"),
                     "teacher_epochs": rs[0].get("teacher_epochs", [])}
    return out


def fmt(m: float, s: float) -> str:
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def checkpoint_rows(results: dict) -> list[dict]:
    """One row per trajectory checkpoint: teacher metrics, information estimates, students."""
    g = groups(results)
    est = results["config"]["info"]["estimator"]
    info = {r["epoch"]: r for r in results["analysis"][est]}
    rows = []
    for t in results["trajectory"]:
        s = g[f"ckpt-{t['epoch']:04d}"]
        # fit records test accuracy at the end of training only: the students' cells evaluated the rest
        test_acc = t["test_acc"] if t.get("test_acc") is not None else s["teacher_acc"]
        rows.append({"epoch": t["epoch"], "teacher_train_acc": t["train_acc"], "teacher_val_acc": t.get("val_acc"),
                     "teacher_acc": test_acc,
                     "ixf": info[t["epoch"]]["ixf"], "iyf": info[t["epoch"]]["iyf"],
                     "score": info[t["epoch"]]["score"], "student_mean": s["mean"], "student_std": s["std"]})
    return rows


def noise(results: dict) -> float:
    """Seed noise: the pooled standard deviation of the per-checkpoint students."""
    stds = [r["student_std"] for r in checkpoint_rows(results)]
    return math.sqrt(sum(s * s for s in stds) / len(stds))


def table_intermediate(results: dict) -> list[dict]:
    rows = checkpoint_rows(results)
    g = groups(results)
    full = rows[-1]
    half_epoch = halfway_epoch([r["epoch"] for r in rows])
    half = next(r for r in rows if r["epoch"] == half_epoch)
    best = max(rows[:-1], key=lambda r: r["student_mean"])
    out = [{"teacher": "none (no KD)", "epoch": None, "teacher_acc": None,
            "student_mean": g["nokd"]["mean"], "student_std": g["nokd"]["std"]}]
    for name, r in (("full (last)", full), ("halfway", half), ("best intermediate", best)):
        out.append({"teacher": name, "epoch": r["epoch"], "teacher_acc": r["teacher_acc"],
                    "student_mean": r["student_mean"], "student_std": r["student_std"]})
    for r in out:
        r["delta_vs_full"] = r["student_mean"] - full["student_mean"]
    return out


def snapshot_group(epochs: list[int]) -> str:
    """The study group of the students of the snapshot ensemble of ``epochs``."""
    return "snap-" + "-".join(f"{e:04d}" for e in epochs)


def table_ensembles(results: dict) -> list[dict]:
    """The full ensemble, every snapshot ensemble a policy picked, and the trajectory averages."""
    g = groups(results)
    picked_by = defaultdict(list)
    for name, p in results.get("selection", {}).items():
        if "ensemble" in p:
            picked_by[snapshot_group(p["ensemble"])].append(name)
    epochs = [t["epoch"] for t in results["trajectory"]]
    paper = snapshot_group([halfway_epoch(epochs), epochs[-1]])  # the paper's two-checkpoint snapshot ensemble

    def label(k: str) -> str:
        parts = ["halfway + last"] if k == paper else []
        parts += [f"picked by {', '.join(picked_by[k])}"] if picked_by[k] else []
        return "snapshot, " + "; ".join(parts)

    labels = [("ens-full", "full ensemble (independent runs, last)")]
    labels += [(k, label(k)) for k in sorted(g) if k.startswith("snap-")]
    labels += [("avg-all", "trajectory average: all checkpoints (mean probabilities)"),
               ("avg-late", "trajectory average: later half (mean probabilities)")]
    return [{"ensemble": label, "epochs": g[k]["teacher_epochs"], "ensemble_acc": g[k]["teacher_acc"],
             "student_mean": g[k]["mean"], "student_std": g[k]["std"]} for k, label in labels if k in g]


def full_distillation_s(results: dict) -> float:
    """Mean wall seconds of one full distillation: the per-checkpoint students' cells."""
    walls = [r["wall_s"] for r in results["students"] if r.get("group") == "ckpt" and r.get("wall_s")]
    return sum(walls) / len(walls) if walls else float("nan")


def table_selection(results: dict) -> list[dict]:
    """Every policy the study measured: its pick, that pick's student, and how far from the best.

    regret = best checkpoint's student (in hindsight) - the pick's student; ``regret_noise`` is
    that in units of the seed noise; ``gap_recovered`` is the share of (best - last) the pick
    wins back, where that gap exceeds twice the noise; ``cost`` is the policy's compute over
    one full distillation's.
    """
    rows = checkpoint_rows(results)
    by_epoch = {r["epoch"]: r for r in rows}
    best, last_row = max(r["student_mean"] for r in rows), rows[-1]
    nz, full_s, g = noise(results), full_distillation_s(results), groups(results)
    students = [r["student_mean"] for r in rows]
    gap = best - last_row["student_mean"]
    out = []
    for name, p in results.get("selection", {}).items():
        if "error" in p:
            out.append({"policy": name, "error": p["error"]})
            continue
        r = by_epoch[p["pick"][0]]
        ens = g.get(snapshot_group(p["ensemble"]), {})
        regret = best - r["student_mean"]
        delta = r["student_mean"] - last_row["student_mean"]
        out.append({"policy": name, "epoch": r["epoch"], "student_mean": r["student_mean"],
                    "student_std": r["student_std"], "regret": regret, "regret_noise": regret / nz if nz else None,
                    "delta_vs_last": delta, "gap_recovered": delta / gap if gap > 2 * nz else None,
                    "spearman": spearman(p["scores"], students), "cost": p["cost_s"] / full_s,
                    "k2_pick": p["ensemble"], "k2_mean": ens.get("mean"), "k2_std": ens.get("std")})
    return out


def table_terms(results: dict) -> list[dict]:
    """The information terms of every estimator as rules, and the teacher's test accuracy as an
    oracle (it reads the test split, so no policy may use it): for reading, not for choosing."""
    rows = checkpoint_rows(results)
    best = max(r["student_mean"] for r in rows)
    students = [r["student_mean"] for r in rows]
    rules = [("oracle: teacher test accuracy", [r["teacher_acc"] for r in rows])]
    for est, arows in results["analysis"].items():
        by_epoch = {a["epoch"]: a for a in arows}
        for key, label in (("ixf", "I(X;F)"), ("iyf", "I(Y;F)"), ("score", "total (Algorithm 1)")):
            rules.append((f"{est}: {label}", [by_epoch[r["epoch"]][key] for r in rows]))
    out = []
    for name, scores in rules:
        if any(v is None for v in scores):
            continue
        i = max(range(len(rows)), key=lambda j: (scores[j], rows[j]["epoch"]))
        out.append({"rule": name, "epoch": rows[i]["epoch"], "student_mean": rows[i]["student_mean"],
                    "student_std": rows[i]["student_std"], "regret": best - rows[i]["student_mean"],
                    "spearman": spearman(scores, students)})
    return out


def verdicts(results: dict, policy: str | None = None) -> dict:
    """The selection targets, measured for ``policy`` (default: the default policy, ``SelectConfig().policy``)."""
    from ..config import SelectConfig

    policy = policy or SelectConfig().policy
    sel = {r["policy"]: r for r in table_selection(results)}
    if policy not in sel or "error" in sel[policy]:
        return {"policy": policy, "measured": False}
    r, nz = sel[policy], noise(results)
    return {"policy": policy, "measured": True, "seed_noise": nz, "epoch": r["epoch"], "regret": r["regret"],
            "within_noise_of_best": r["regret"] <= nz, "vs_last": r["delta_vs_last"],
            "not_worse_than_last": r["delta_vs_last"] >= -nz, "gap_recovered": r["gap_recovered"],
            "spearman": r["spearman"], "cost": r["cost"]}


def _md(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for _, key in columns:
            cells.append(_cell(r, key))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(r: dict, key: str) -> str:
    if key == "student":
        return fmt(r["student_mean"], r["student_std"])
    if key == "k2_student":
        return "-" if r.get("k2_mean") is None else fmt(r["k2_mean"], r["k2_std"])
    v = r.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key in ("teacher_acc", "ensemble_acc", "teacher_train_acc", "teacher_val_acc", "gap_recovered"):
        return f"{100 * v:.2f}" if key != "gap_recovered" else f"{100 * v:.0f}%"
    if key in ("delta_vs_full", "regret", "delta_vs_last"):
        return f"{100 * v:+.2f}"
    if key in ("epochs", "k2_pick"):
        return "+".join(map(str, v))
    if key in ("cost", "regret_noise"):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


SELECTION_COLUMNS = [("policy", "policy"), ("pick", "epoch"), ("student acc", "student"), ("regret", "regret"),
                     ("regret / noise", "regret_noise"), ("Δ vs last", "delta_vs_last"),
                     ("gap recovered", "gap_recovered"), ("Spearman ρ", "spearman"), ("cost", "cost"),
                     ("k-pick (k = ensemble_size)", "k2_pick"), ("its student", "k2_student")]


def method_label(cfg: dict) -> str:
    """The study's distillation method and its parameters, ``dkd (T=4, ce_weight=1, ...)``;
    a study from before methods were registered distilled with ``kd``."""
    from ..config import KDConfig, from_dict
    from ..distill.registry import describe_method

    return describe_method(from_dict(KDConfig, cfg.get("kd") or {}, "kd"))


def describe(cfg: dict) -> str:
    noisy = cfg["data"].get("label_noise")
    return (f"{cfg['teacher']['model']} → {cfg['student']['model']} on `{cfg['data']['spec']}`"
            f"{' with ' + str(int(round(100 * noisy))) + '% flipped labels' if noisy else ''}, "
            f"distilled with {method_label(cfg)}")


def verdict_line(v: dict) -> str:
    if not v["measured"]:
        return f"Policy {v['policy']} was not measured in this study."
    return (f"Targets for {v['policy']} (pick: epoch {v['epoch']}): regret {100 * v['regret']:+.2f} vs seed noise "
            f"{100 * v['seed_noise']:.2f} → {'within' if v['within_noise_of_best'] else 'NOT within'} "
            "noise of the best; "
            f"vs last {100 * v['vs_last']:+.2f} → {'not worse' if v['not_worse_than_last'] else 'WORSE'}; "
            f"Spearman ρ = {v['spearman']:.2f}; cost {v['cost']:.2f} of one distillation.")


def render_markdown(results: dict) -> str:
    cfg = results["config"]
    selection = table_selection(results)
    failed = [r for r in selection if "error" in r]
    by = f"(students: {method_label(cfg)})"  # every table names the method its students learnt with
    parts = [
        f"**{cfg['name']}**: {describe(cfg)}; {len(cfg['student_seeds'])} student seeds, accuracies on the test split "
        "in %, mean ± std.",
        "", f"*Full teacher vs intermediate teacher* {by}", "",
        _md(table_intermediate(results), [("teacher", "teacher"), ("epoch", "epoch"), ("teacher acc", "teacher_acc"),
                                          ("student acc", "student"),
                                          ("Δ vs full teacher's student", "delta_vs_full")]),
        "", f"*Full ensemble vs snapshot ensembles and trajectory averages* {by}", "",
        _md(table_ensembles(results), [("teacher", "ensemble"), ("epochs", "epochs"), ("ensemble acc", "ensemble_acc"),
                                       ("student acc", "student")]),
        "", "*Selection: which checkpoint each policy picks* (regret = best checkpoint's student − the pick's; "
            f"cost in full distillations) {by}", "",
        _md([r for r in selection if "error" not in r], SELECTION_COLUMNS),
        *([""] + [f"- {r['policy']} did not run: {r['error']}" for r in failed] if failed else []),
        "", f"*Information terms and the test-accuracy oracle, as rules* (for reading; no policy reads the test split) "
            f"{by}", "",
        _md(table_terms(results), [("rule", "rule"), ("epoch", "epoch"), ("student acc", "student"),
                                   ("regret", "regret"), ("Spearman ρ (score vs student)", "spearman")]),
        "", f"*Every checkpoint of the trajectory* {by}", "",
        _md(checkpoint_rows(results), [("epoch", "epoch"), ("teacher train acc", "teacher_train_acc"),
                                       ("teacher val acc", "teacher_val_acc"), ("teacher test acc", "teacher_acc"),
                                       ("I(X;F)", "ixf"), ("I(Y;F)", "iyf"), ("score", "score"),
                                       ("student acc", "student")]),
        "", verdict_line(verdicts(results)),
        *(["", verdict_line(verdicts(results, "mi"))] if verdicts(results)["policy"] != "mi" else []),
    ]
    return "\n".join(parts) + "\n"


def write_tables(results: dict, root: Path) -> list[Path]:
    """tables.md, tables.json and one CSV per table in ``root``."""
    tables = {"intermediate": table_intermediate(results), "ensembles": table_ensembles(results),
              "selection": [r for r in table_selection(results) if "error" not in r], "terms": table_terms(results),
              "checkpoints": checkpoint_rows(results)}
    method = method_label(results["config"])
    tables = {name: [{"method": method, **r} for r in rows] for name, rows in tables.items()}
    atomic_write(root / "tables.md", render_markdown(results).encode())
    atomic_write(root / "tables.json", (json.dumps({**tables, "verdicts": {"method": method, **verdicts(results)}},
                                                   indent=2) + "\n").encode())
    paths = [root / "tables.md", root / "tables.json"]
    for name, rows in tables.items():
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write(root / f"table_{name}.csv", buf.getvalue().encode())
        paths.append(root / f"table_{name}.csv")
    return paths


def plot_study(results: dict, root: Path) -> list[Path]:
    """student_vs_epoch.png and information_plane.png (coloured by student accuracy)."""
    from .plots import information_plane, integer_ticks, plt

    rows = checkpoint_rows(results)
    g = groups(results)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ep = [r["epoch"] for r in rows]
    ax.errorbar(ep, [100 * r["student_mean"] for r in rows], yerr=[100 * r["student_std"] for r in rows],
                fmt="o-", capsize=3, label="student of checkpoint")
    ax.axhline(100 * g["nokd"]["mean"], color="0.5", ls="--", label="student without KD")
    ax.set_xlabel("teacher checkpoint epoch")
    integer_ticks(ax.xaxis)
    ax.set_ylabel("student test accuracy [%]")
    twin = ax.twinx()
    twin.plot(ep, [100 * r["teacher_acc"] for r in rows], "s:", color="C1", label="teacher")
    twin.set_ylabel("teacher test accuracy [%]", color="C1")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(results["config"]["name"])
    fig.tight_layout()
    paths = [root / "student_vs_epoch.png"]
    fig.savefig(paths[0])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    plane = [{**r, "student": 100 * r["student_mean"]} for r in rows]
    information_plane(plane, ax, color_key="student", label="student accuracy [%]")
    fig.tight_layout()
    paths.append(root / "information_plane.png")
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
