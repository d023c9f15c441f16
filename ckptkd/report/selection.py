"""The selection benchmark: every policy measured on several studies, and the default's targets.

Per study, ``ckptkd.report.study.table_selection`` gives each policy's pick and its regret.
Across studies this module asks what a user needs from a default: its *worst* case. A
policy meets the targets when, on every study,

- its regret is at most the seed noise (``regret_noise <= 1``);
- it is never below ``last`` by more than the noise;
- where the best checkpoint beats ``last`` by more than twice the noise, it recovers at
  least 80% of that gap;
- it costs at most one full distillation.
"""
from __future__ import annotations

from .study import checkpoint_rows, describe, groups, noise, table_selection

TARGETS = {"regret_noise": 1.0, "recovery": 0.8, "cost": 1.0}


def outcome(row: dict, nz: float) -> str:
    """Win, tie or loss against ``last``: a difference within the seed noise is a tie."""
    if row["delta_vs_last"] > nz:
        return "win"
    return "loss" if row["delta_vs_last"] < -nz else "tie"


def summary(studies: list[dict]) -> list[dict]:
    """One row per policy over ``studies`` (results.json dicts), worst cases first-class."""
    per_policy: dict[str, list[tuple[dict, float]]] = {}
    for results in studies:
        nz = noise(results)
        for row in table_selection(results):
            per_policy.setdefault(row["policy"], []).append((row, nz))
    out = []
    for name, measured in per_policy.items():
        ok = [(r, nz) for r, nz in measured if "error" not in r]
        if len(ok) < len(studies):
            out.append({"policy": name, "studies": len(ok), "note": "did not run on every study"})
            continue
        outcomes = [outcome(r, nz) for r, nz in ok]
        recoveries = [r["gap_recovered"] for r, _ in ok if r["gap_recovered"] is not None]
        row = {"policy": name, "studies": len(ok),
               "mean_regret": sum(r["regret"] for r, _ in ok) / len(ok),
               "worst_regret_noise": max(r["regret_noise"] for r, _ in ok),
               "worst_vs_last_noise": min(r["delta_vs_last"] / nz for r, nz in ok),
               "wins": outcomes.count("win"), "ties": outcomes.count("tie"), "losses": outcomes.count("loss"),
               "worst_recovery": min(recoveries) if recoveries else None,
               "worst_cost": max(r["cost"] for r, _ in ok)}
        row["meets"] = targets_met(row)
        out.append(row)
    return sorted(out, key=lambda r: (r.get("worst_regret_noise", float("inf")), r.get("mean_regret", 0)))


def targets_met(row: dict) -> list[str]:
    """The targets a summary row misses ([] = all met)."""
    missed = []
    if row["worst_regret_noise"] > TARGETS["regret_noise"]:
        missed.append("regret > noise")
    if row["worst_vs_last_noise"] < -1:
        missed.append("below last by > noise")
    if row["worst_recovery"] is not None and row["worst_recovery"] < TARGETS["recovery"]:
        missed.append("recovers < 80% of the gap")
    if row["worst_cost"] > TARGETS["cost"]:
        missed.append("costs > 1 distillation")
    return missed


def render_summary(rows: list[dict]) -> str:
    lines = ["| policy | mean regret | worst regret / noise | worst (pick − last) / noise "
             "| wins / ties / losses vs last | worst gap recovered | worst cost | targets |", "|" + "---|" * 8]
    for r in rows:
        recovery = "-" if r.get("worst_recovery") is None else f"{100 * r['worst_recovery']:.0f}%"
        if "note" in r:
            lines.append(f"| {r['policy']} | {r['note']} ({r['studies']} studies) |" + " |" * 6)
            continue
        lines.append(
            f"| {r['policy']} | {100 * r['mean_regret']:.2f} | {r['worst_regret_noise']:.2f} | "
            f"{r['worst_vs_last_noise']:+.2f} | {r['wins']} / {r['ties']} / {r['losses']} | "
            f"{recovery} | {r['worst_cost']:.2f} | "
            f"{'all met' if not r['meets'] else '; '.join(r['meets'])} |")
    return "\n".join(lines)


def judge_verdict(results: dict) -> dict | None:
    """The study's verdict on distilling (``ckptkd.select.verdict``, for the default policy's
    pick) against the hindsight of its full-length students: the pick's students and the no-KD
    students, over the study's student seeds. ``right`` is False when the verdict says "distil"
    while no KD is ahead by more than the seed noise, or "do not distil" while the pick's
    students are ahead by more than it (that miss costs the user the gap); None otherwise
    (within the noise, either answer is as good). None for a study without a verdict."""
    verdict = results.get("recommendation")
    if not verdict or "error" in verdict:
        return None
    by_epoch = {r["epoch"]: r for r in checkpoint_rows(results)}
    nokd = groups(results).get("nokd")
    if nokd is None or len(verdict["teacher"]) != 1 or verdict["teacher"][0] not in by_epoch:
        return None
    pick, nz = by_epoch[verdict["teacher"][0]]["student_mean"], noise(results)
    ahead = nokd["mean"] - pick  # > 0: no KD teaches better than the picked teacher
    right = None
    if abs(ahead) > nz:
        right = (ahead > 0) == (not verdict["distil"])
    return {"distil": verdict["distil"], "compared": verdict.get("evidence") is not None, "pick": pick,
            "nokd": nokd["mean"], "nokd_minus_pick": ahead, "right": right, "reason": verdict["reason"]}


def render_verdict(results: dict) -> str:
    j = judge_verdict(results)
    if j is None:
        return ""
    answer = {True: "right", False: "wrong", None: "within the noise"}[j["right"]]
    return (f"Verdict on distilling ({results['recommendation'].get('policy', 'default')}'s pick): "
            f"{'distil' if j['distil'] else 'do not distil'}"
            f"{'' if j['compared'] else ' (no KD not compared)'}; in hindsight no KD − the pick's students = "
            f"{100 * j['nokd_minus_pick']:+.2f} points: {answer}.")


def verdict_summary(studies: list[dict]) -> dict:
    """``judge_verdict`` over ``studies``: how many verdicts were right, wrong, within the noise
    (either answer as good), or not compared (no verdict, or no student to judge it by), with
    the wrong ones named, and how many verdicts weighed no KD's evidence at all."""
    counts = {"right": [], "wrong": [], "within the noise": [], "not compared": []}
    weighed = 0
    for results in studies:
        j = judge_verdict(results)
        if j is None:
            counts["not compared"].append(results["config"]["name"])
            continue
        weighed += j["compared"]
        counts[{True: "right", False: "wrong", None: "within the noise"}[j["right"]]].append(results["config"]["name"])
    return {"studies": len(studies), "weighed_nokd": weighed, **{k: len(v) for k, v in counts.items()},
            "wrong_studies": counts["wrong"], "not_compared_studies": counts["not compared"]}


def render_verdict_summary(studies: list[dict]) -> str:
    s = verdict_summary(studies)
    wrong = f" ({', '.join(s['wrong_studies'])})" if s["wrong_studies"] else ""
    return (f"Verdict on distilling, judged against the no-KD students over {s['studies']} studies: "
            f"{s['right']} right, {s['wrong']} wrong{wrong}, {s['within the noise']} within the noise, "
            f"{s['not compared']} not compared; "
            f"the verdict weighed no KD's evidence on {s['weighed_nokd']} of them.")


def render_study(results: dict, folder: str) -> str:
    """One study's policy table, with its seed noise and gap."""
    from .study import SELECTION_COLUMNS, _md

    rows = checkpoint_rows(results)
    best = max(rows, key=lambda r: r["student_mean"])
    nz = noise(results)
    gap = best["student_mean"] - rows[-1]["student_mean"]
    selection = table_selection(results)
    failed = [f"- {r['policy']} did not run: {r['error']}" for r in selection if "error" in r]
    cfg = results["config"]
    verdict = render_verdict(results)
    return "\n".join([
        f"### {cfg['name']}", "",
        f"{describe(cfg)}; study folder `{folder}`. Seed noise (pooled std of the per-checkpoint students) "
        f"{100 * nz:.2f} points; best checkpoint in hindsight: epoch {best['epoch']} "
        f"({100 * best['student_mean']:.2f}); best − last = {100 * gap:+.2f} points "
        f"({gap / nz:.1f}× the noise).", "",
        _md([r for r in selection if "error" not in r], SELECTION_COLUMNS), *([""] + failed if failed else []),
        *(["", verdict] if verdict else []), ""])
