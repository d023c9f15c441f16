"""What each extra unit of compute buys, and the four target figures of one policy.

``regret_vs_budget`` puts every policy's regret against what it spent, in full distillations
(``ckptkd.select.budget``), over the studies that ran a ``budget_sweep``: the ``proxy@B``
points of the sweep (policy ``proxy`` fitted to spend at most B) as a curve, the other policies
that spend (``proxy``, ``proxy-full``) as points, and the policies that spend nothing as flat
references. ``default_targets`` gives, for one policy over every study, the worst case of each
target of ``ckptkd.report.selection`` (issue 19), where it happens and by how much it is met or
missed. Both read results.json dicts only.
"""
from __future__ import annotations

from pathlib import Path

from .study import noise, table_selection

SWEEP_PREFIX = "proxy@"
KIND_ORDER = {"sweep": 0, "spending": 1, "budget 0": 2}


def study_name(results: dict) -> str:
    return results["config"]["name"]


def swept(studies: list[dict]) -> list[dict]:
    """The studies that ran a budget sweep (config ``budget_sweep``)."""
    return [r for r in studies if r["config"].get("budget_sweep")]


def measurements(studies: list[dict]) -> dict[str, list[dict]]:
    """Per policy, one entry per study that recorded it: the study, its table_selection row,
    its results.json record and the study's seed noise."""
    out: dict[str, list[dict]] = {}
    for results in studies:
        nz, records = noise(results), results.get("selection", {})
        for row in table_selection(results):
            out.setdefault(row["policy"], []).append(
                {"study": study_name(results), "row": row, "record": records[row["policy"]], "noise": nz})
    return out


def regret_vs_budget(studies: list[dict]) -> list[dict]:
    """One row per policy over the studies with a sweep (the others are left out: only there
    were the ``proxy@B`` points measured): mean regret, worst regret / noise and where, and the
    spend in distillations (worst over the studies; for ``proxy@B``, ``budget`` is B itself).
    ``kind`` is ``sweep``, ``spending`` (spent > 0 somewhere) or ``budget 0``. A policy that did
    not run on every one of those studies gets a ``note`` instead of figures."""
    studies = swept(studies)
    rows = []
    for name, runs in measurements(studies).items():
        ok = [m for m in runs if "error" not in m["row"]]
        kind = "sweep" if name.startswith(SWEEP_PREFIX) else \
            "spending" if any(m["record"].get("distillations", 0) > 0 for m in ok) else "budget 0"
        base = {"policy": name, "kind": kind, "studies": len(ok), "of": len(studies)}
        if len(ok) < len(studies) or not ok:
            rows.append({**base, "budget": runs[0]["record"].get("budget"),
                         "note": f"did not run on every study with a sweep ({len(ok)} of {len(studies)})"})
            continue
        worst = max(ok, key=lambda m: m["row"]["regret_noise"])
        spend = max(m["record"].get("distillations", 0.0) for m in ok)
        rows.append({**base, "budget": ok[0]["record"]["budget"] if kind == "sweep" else spend, "spend": spend,
                     "mean_regret": sum(m["row"]["regret"] for m in ok) / len(ok),
                     "worst_regret_noise": worst["row"]["regret_noise"], "worst_study": worst["study"],
                     "worst_cost_s": max(m["row"]["cost"] for m in ok)})
    return sorted(rows, key=lambda r: (KIND_ORDER[r["kind"]], r.get("budget") or 0, r["policy"]))


def render_budget(rows: list[dict], references: list[str]) -> str:
    """The numbers of the plot: the sweep, the spending policies, and the ``references``."""
    lines = ["| policy | budget B | spent (worst, distillations) | mean regret | worst regret / noise | where "
             "| worst wall-time cost |", "|" + "---|" * 7]
    for r in rows:
        if r["kind"] == "budget 0" and r["policy"] not in references:
            continue
        b = "-" if r["kind"] != "sweep" else f"{r['budget']:g}"
        if "note" in r:
            lines.append(f"| {r['policy']} | {b} | {r['note']} |" + " |" * 4)
            continue
        lines.append(f"| {r['policy']} | {b} | {r['spend']:.2f} | {100 * r['mean_regret']:.2f} | "
                     f"{r['worst_regret_noise']:.2f} | {r['worst_study']} | {r['worst_cost_s']:.2f} |")
    return "\n".join(lines)


def plot_regret_vs_budget(rows: list[dict], references: list[str], path: Path, n_studies: int) -> Path:
    """Two panels against the spend: mean regret in points, and worst regret / noise; the
    ``proxy@B`` curve, the other spending policies as points, ``references`` as flat lines."""
    from .plots import plt, save_figure

    drawn = [r for r in rows if "note" not in r]
    sweep = sorted((r for r in drawn if r["kind"] == "sweep"), key=lambda r: r["budget"])
    spending = [r for r in drawn if r["kind"] == "spending"]
    flat = [r for r in drawn if r["kind"] == "budget 0" and r["policy"] in references]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    panels = ((lambda r: 100 * r["mean_regret"], "mean regret [points]"),
              (lambda r: r["worst_regret_noise"], "worst regret / seed noise"))
    for ax, (value, label) in zip(axes, panels):
        if sweep:
            ax.plot([r["budget"] for r in sweep], [value(r) for r in sweep], "o-", color="C0", label="proxy@B")
        for i, r in enumerate(spending):
            ax.plot([r["spend"]], [value(r)], "s", color=f"C{1 + i}", label=f"{r['policy']} (spent)")
        for i, r in enumerate(flat):
            ax.axhline(value(r), color=f"C{1 + len(spending) + i}", ls="--", lw=1, label=f"{r['policy']} (0)")
        if label.startswith("worst"):
            ax.axhline(1.0, color="0.5", ls=":", lw=1, label="target: 1× the noise")
        ax.set_xlabel("selection spend [full distillations]")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, 1.1 * max([r["spend"] for r in sweep + spending] + [r["budget"] for r in sweep] + [1.0]))
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"regret against the selection budget ({n_studies} studies with a budget sweep)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


TARGET_LABELS = {"regret_noise": "worst regret / noise ≤ 1", "vs_last_noise": "worst (pick − last) / noise ≥ −1",
                 "recovery": "worst share of a gap > 2× noise recovered ≥ 80%",
                 "cost": "worst cost ≤ 1 distillation"}


def default_targets(studies: list[dict], policy: str) -> dict:
    """The four target figures of ``policy`` over ``studies``: for each, its worst value, the
    study where it occurs, whether it meets the target and by how much it misses (in the
    figure's own unit). ``missing`` names the studies where it did not run (then the figures
    are over the others). The cost is the spend in distillations as the budget counts it
    (sample passes), compared at the budget's precision (0.01)."""
    from .selection import TARGETS

    runs = measurements(studies).get(policy, [])
    ok = [m for m in runs if "error" not in m["row"]]
    done = {m["study"] for m in ok}
    missing = [study_name(r) for r in studies if study_name(r) not in done]
    out = {"policy": policy, "studies": len(ok), "missing": missing}
    if not ok:
        return {**out, "figures": []}

    def worst(key, pick, among=ok, every="every study"):
        """The worst value of ``key`` and its study (``every`` when all are the same)."""
        values = [key(m) for m in among]
        value = pick(values)
        return value, every if len(set(values)) == 1 < len(values) else among[values.index(value)]["study"]

    regret, regret_at = worst(lambda m: m["row"]["regret_noise"], max)
    vs_last, vs_last_at = worst(lambda m: m["row"]["delta_vs_last"] / m["noise"], min)
    gaps = [m for m in ok if m["row"]["gap_recovered"] is not None]
    recovery, recovery_at = (worst(lambda m: m["row"]["gap_recovered"], min, gaps, "every study with a gap")
                             if gaps else (None, None))
    cost, cost_at = worst(lambda m: m["record"].get("distillations", 0.0), max)
    figures = [("regret_noise", regret, regret_at, regret - TARGETS["regret_noise"]),
               ("vs_last_noise", vs_last, vs_last_at, -1.0 - vs_last),
               ("recovery", recovery, recovery_at, None if recovery is None else TARGETS["recovery"] - recovery),
               ("cost", cost, cost_at, round(cost, 2) - TARGETS["cost"])]
    return {**out, "figures": [{"target": key, "value": value, "study": at, "met": by is None or by <= 1e-9,
                                "missed_by": None if by is None or by <= 1e-9 else by}
                               for key, value, at, by in figures]}


def _figure(f: dict) -> tuple[str, str]:
    """(value, result) of one target figure, in its own unit."""
    key, v, by = f["target"], f["value"], f["missed_by"]
    if key == "recovery" and v is None:
        return "no gap", "met (no gap > 2× noise)"
    value = f"{100 * v:.0f}%" if key == "recovery" else f"{v:.2f}" if key == "cost" else f"{v:+.2f}" \
        if key == "vs_last_noise" else f"{v:.2f}"
    unit = {"regret_noise": "× the noise", "vs_last_noise": "× the noise", "recovery": "percentage points",
            "cost": "distillations"}[key]
    if f["met"]:
        return value, "met"
    return value, f"missed by {100 * by:.0f} {unit}" if key == "recovery" else f"missed by {by:.2f} {unit}"


def render_targets(targets: list[dict]) -> str:
    """The four figures of each policy, one row per target."""
    lines = ["| policy | target | worst | where | result |", "|" + "---|" * 5]
    for t in targets:
        name = t["policy"]
        if t["missing"]:
            lines.append(f"| {name} | runs on every study | {t['studies']} of {t['studies'] + len(t['missing'])} | "
                         f"not on {', '.join(t['missing'])} | missed |")
            name = ""
        for f in t["figures"]:
            value, result = _figure(f)
            lines.append(f"| {name} | {TARGET_LABELS[f['target']]} | {value} | {f['study'] or '-'} | {result} |")
            name = ""
    return "\n".join(lines)
