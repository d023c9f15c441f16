"""The benchmark's figures across studies: the four targets of a policy, the regret against the
selection budget, the verdict summary, and scripts/make_selection.py writing them into a doc.

The studies are hand-made results.json dicts (test_study.synthetic_results): checkpoints 1, 2
and 3 teach students of 0.81, 0.91 and 0.85 on average; the figures are worked out by hand.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_study import synthetic_results

from ckptkd.config import SelectConfig
from ckptkd.report import budget
from ckptkd.report.selection import render_verdict_summary, summary, verdict_summary

ROOT = Path(__file__).resolve().parents[1]
NOISE = math.sqrt((2e-4 + 2e-4 + 0) / 3)  # pooled std of [.80, .82], [.90, .92], [.85, .85]


def study(name: str, **selection) -> dict:
    r = synthetic_results()
    r["config"]["name"] = name
    r["selection"].update(selection)
    return r


def no_gap(name: str) -> dict:
    """Checkpoint 3's students as good as 2's: no gap between the best and the last."""
    r = study(name)
    for s in r["students"]:
        if s["cell"].startswith("student/ckpt-0003/"):
            s["acc"] = {"seed0": 0.90, "seed1": 0.92}[s["cell"].split("/")[2]]
    return r


def pick(epoch: int, distillations: float = 0.0, **extra) -> dict:
    return {"scores": [float(epoch == e) for e in (1, 2, 3)], "pick": [epoch], "ensemble": [epoch, 3], "cost_s": 1.0,
            "distillations": distillations, **extra}


def three_studies() -> list[dict]:
    """mi picks the best in a, the worst in b (at 1.5 distillations), the best in c (no gap)."""
    return [study("a", mi=pick(2, 0.5)), study("b", mi=pick(1, 1.5)), no_gap("c")]


def test_default_targets_gives_each_worst_figure_where_it_happens_and_by_how_much():
    a, b, c = three_studies()
    c["selection"]["mi"] = pick(2, 0.25)
    t = budget.default_targets([a, b, c], "mi")
    assert t["studies"] == 3 and t["missing"] == []
    f = {x["target"]: x for x in t["figures"]}
    # b: the pick's students 0.81 against the best's 0.91 and last's 0.85
    assert f["regret_noise"]["value"] == pytest.approx(0.10 / NOISE) and f["regret_noise"]["study"] == "b"
    assert f["regret_noise"]["missed_by"] == pytest.approx(0.10 / NOISE - 1) and not f["regret_noise"]["met"]
    assert f["vs_last_noise"]["value"] == pytest.approx(-0.04 / NOISE) and f["vs_last_noise"]["study"] == "b"
    assert f["vs_last_noise"]["missed_by"] == pytest.approx(0.04 / NOISE - 1)
    # gaps (0.06 > 2 x noise) in a and b only: all of a's won back, b's pick is 0.04 below last
    assert f["recovery"]["value"] == pytest.approx(-0.04 / 0.06) and f["recovery"]["study"] == "b"
    assert f["recovery"]["missed_by"] == pytest.approx(0.8 + 0.04 / 0.06)
    assert (f["cost"]["value"], f["cost"]["study"], f["cost"]["missed_by"]) == (1.5, "b", pytest.approx(0.5))
    text = budget.render_targets([t])
    assert "| mi | worst regret / noise ≤ 1 | 8.66 | b | missed by 7.66 × the noise |" in text
    assert "| worst share of a gap > 2× noise recovered ≥ 80% | -67% | b | missed by 147 percentage points |" in text
    assert "| worst cost ≤ 1 distillation | 1.50 | b | missed by 0.50 distillations |" in text


def test_last_meets_two_targets_everywhere_and_a_study_without_a_gap_has_none_to_recover():
    a, b, c = three_studies()
    f = {x["target"]: x for x in budget.default_targets([a, b, c], "last")["figures"]}
    assert f["regret_noise"]["value"] == pytest.approx(0.06 / NOISE) and f["regret_noise"]["study"] == "a"
    assert (f["vs_last_noise"]["value"], f["vs_last_noise"]["study"], f["vs_last_noise"]["met"]) == \
        (0, "every study", True)
    assert f["recovery"]["value"] == 0 and f["recovery"]["study"] == "every study with a gap"
    assert f["recovery"]["missed_by"] == pytest.approx(0.8)
    assert f["cost"]["met"] and f["cost"]["value"] == 0
    alone = budget.default_targets([c], "last")
    rec = next(x for x in alone["figures"] if x["target"] == "recovery")
    assert rec["value"] is None and rec["met"]
    assert "| no gap | - | met (no gap > 2× noise) |" in budget.render_targets([alone])


def test_a_policy_that_did_not_run_everywhere_misses_the_targets_by_name():
    a, b, c = three_studies()
    t = budget.default_targets([a, b, c], "best-val")  # its record is an error in every study
    assert t["missing"] == ["a", "b", "c"] and t["figures"] == []
    assert "| best-val | runs on every study | 0 of 3 | not on a, b, c | missed |" in budget.render_targets([t])


def swept_studies() -> list[dict]:
    """a and b ran a budget sweep of 0.5 and 2 (2 could not run on b); c ran none."""
    a = study("a", **{"proxy@0.5": pick(1, 0.5, budget=0.5), "proxy@2": pick(2, 1.8, budget=2.0),
                      "proxy-full": pick(2, 1.0)})
    b = study("b", **{"proxy@0.5": pick(2, 0.45, budget=0.5), "proxy@2": {"error": "too small", "budget": 2.0},
                      "proxy-full": pick(3, 1.01)})
    for r in (a, b):
        r["config"]["budget_sweep"] = [0.5, 2.0]
    return [a, b, no_gap("c")]


def test_regret_against_the_budget_uses_the_studies_with_a_sweep():
    rows = {r["policy"]: r for r in budget.regret_vs_budget(swept_studies())}
    half = rows["proxy@0.5"]
    assert (half["kind"], half["budget"], half["spend"], half["studies"], half["of"]) == ("sweep", 0.5, 0.5, 2, 2)
    assert half["mean_regret"] == pytest.approx((0.10 + 0.0) / 2)
    assert half["worst_regret_noise"] == pytest.approx(0.10 / NOISE) and half["worst_study"] == "a"
    assert rows["proxy@2"]["note"] == "did not run on every study with a sweep (1 of 2)"
    full = rows["proxy-full"]
    assert (full["kind"], full["budget"], full["worst_study"]) == ("spending", 1.01, "b")
    assert full["mean_regret"] == pytest.approx(0.03)
    # mi picks 2 in both (c, without a sweep, is left out), last 3: flat references at budget 0
    assert rows["mi"]["kind"] == rows["last"]["kind"] == "budget 0" and rows["last"]["studies"] == 2
    assert rows["last"]["mean_regret"] == pytest.approx(0.06) and rows["mi"]["mean_regret"] == 0
    assert "best-val" in rows and "note" in rows["best-val"]
    text = budget.render_budget(list(rows.values()), ["last"])
    assert "| proxy@0.5 | 0.5 | 0.50 | 5.00 | 8.66 | a | 0.50 |" in text
    assert "| last | - | 0.00 | 6.00 |" in text and "| mi |" not in text  # mi is no reference here
    assert budget.regret_vs_budget([no_gap("c")]) == []


def test_the_main_summary_keeps_every_policy_when_the_sweep_ran_on_some_studies():
    rows = {r["policy"]: r for r in summary(swept_studies())}
    assert rows["proxy@0.5"]["note"] == "did not run on every study" and rows["proxy@0.5"]["studies"] == 2
    assert "note" not in rows["mi"] and "note" not in rows["last"] and rows["last"]["studies"] == 3


def test_the_plot_has_two_panels_and_is_a_png(tmp_path):
    rows = budget.regret_vs_budget(swept_studies())
    path = budget.plot_regret_vs_budget(rows, ["last", "mi"], tmp_path / "plot.png", 2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]  # two panels side by side


def test_the_verdict_summary_counts_right_wrong_and_within_the_noise():
    studies = [study(n) for n in "abcd"]
    # no KD 0.70; checkpoint 3's students 0.85: "distil" is right, "do not distil" wrong
    for r, distil in zip(studies, (True, False, True)):
        r["recommendation"] = {"distil": distil, "teacher": [3], "reason": "x", "evidence": {} if distil else None}
    studies[2]["students"] = [{**s, "acc": 0.85} if s["cell"].startswith("student/nokd/") else s
                              for s in studies[2]["students"]]  # no KD as good as the pick: within the noise
    s = verdict_summary(studies)
    assert (s["right"], s["wrong"], s["within the noise"], s["not compared"]) == (1, 1, 1, 1)
    assert s["wrong_studies"] == ["b"] and s["not_compared_studies"] == ["d"] and s["weighed_nokd"] == 2
    assert "over 4 studies: 1 right, 1 wrong (b), 1 within the noise, 1 not compared" in render_verdict_summary(studies)


def test_make_selection_writes_the_rounds_targets_verdict_and_budget_plot(tmp_path):
    folders = []
    for r in swept_studies():
        folder = tmp_path / "studies" / r["config"]["name"]
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(r))
        folders.append(str(folder))
    doc = tmp_path / "docs" / "selection.md"
    doc.parent.mkdir()
    doc.write_text("# before\n\n<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\n\nafter\n")
    script = [sys.executable, str(ROOT / "scripts" / "make_selection.py"), "--doc", str(doc)]
    rounds = ["--round", f"dev=abc1234:{folders[0]}", "--round", f"confirm=def5678:{folders[1]},{folders[2]}"]
    subprocess.run(script + rounds + ["--candidates", "mi,proxy-full"], check=True, capture_output=True)
    text = doc.read_text()
    assert text.startswith("# before\n") and text.endswith("\nafter\n") and "\nold\n" not in text
    assert "1. **dev** (commit `abc1234`): a\n2. **confirm** (commit `def5678`): b, c" in text
    assert "### Round dev only (commit `abc1234`: a)" in text and "### Round confirm only" in text
    targets = text.split("### The four targets over all 3 studies")[1].split("###")[0]
    assert [line.split(" | ")[0] for line in targets.splitlines() if line.startswith("| ") and
            not line.startswith("|  |")][1:] == [f"| {p}" for p in dict.fromkeys(
                [SelectConfig().policy, "last", "mi", "proxy-full"])]
    assert "0 right, 0 wrong, 0 within the noise, 3 not compared" in text
    assert "Over the 2 of 3 studies that ran a `budget_sweep` (a, b)" in text
    assert "![regret against the selection budget](img/regret_vs_budget.png)" in text
    assert (doc.parent / "img" / "regret_vs_budget.png").stat().st_size > 0
    bad = subprocess.run(script + rounds[:2] + ["--candidates", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--candidates names 'nope', which no study measured" in bad.stderr
    bad = subprocess.run(script + ["--round", "dev:abc"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected NAME=COMMIT:FOLDER[,FOLDER...]" in bad.stderr
