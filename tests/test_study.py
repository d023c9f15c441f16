"""The study runner: a resumable grid of cells, and the paper-style tables it produces."""
import json
import shutil

import pytest

from ckptkd.config import SelectConfig, StudyConfig, from_dict
from ckptkd.data.cifar import write_fake_cifar
from ckptkd.report import study as report
from ckptkd.study import cells as cells_mod
from ckptkd.study import run_study

TINY = {
    "name": "tiny",
    "data": {"spec": "digits", "augment": False},
    "teacher": {"model": "mlp_s", "epochs": 3, "save_every": 1, "batch_size": 64},
    "student": {"model": "mlp_xs", "epochs": 1, "batch_size": 64},
    "info": {"probe_size": 200},
    "teacher_seeds": [0, 1],
    "student_seeds": [0, 1],
    "estimators": ["kde", "categorical"],
    "budget": 4,  # proxy's 3 candidates x 1 of 1 epoch cost 3 distillations; the verdict's pairs fit in the rest
}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = from_dict(StudyConfig, TINY)
    return cfg, root, run_study(cfg, root, progress=False)


def count_runs(monkeypatch):
    calls = []
    original = cells_mod.run_cell

    def counting(cell, *args, **kwargs):
        calls.append(cell.id)
        return original(cell, *args, **kwargs)

    monkeypatch.setattr("ckptkd.study.runner.run_cell", counting)
    return calls


def test_the_grid_has_every_cell(finished_study):
    _, _, results = finished_study
    groups = {r["cell"].split("/")[1] for r in results["students"]}
    picked = {report.snapshot_group(results["selection"][p]["ensemble"])
              for p in StudyConfig().snapshot_policies}
    snapshots = picked | {"snap-0001-0003"}  # and the paper's halfway + last (1.5 is a tie: the earlier)
    assert groups == {"nokd", "ckpt-0001", "ckpt-0002", "ckpt-0003", "ens-full", "avg-all", "avg-late"} | snapshots
    assert len(results["students"]) == len(groups) * 2 and len(results["teachers"]) == 2
    assert set(results["analysis"]) == {"kde", "categorical"}


def test_every_registered_policy_is_measured_with_its_picks_and_cost(finished_study):
    from ckptkd.select import POLICIES

    _, _, results = finished_study
    measured = results["selection"]
    assert set(measured) == {name for name, p in POLICIES.items() if not p.takes_epochs}
    for name, p in measured.items():
        assert len(p["scores"]) == 3 and len(p["pick"]) == 1, name
        assert len(p["ensemble"]) == 2 and p["ensemble"][1] - p["ensemble"][0] >= 2, name  # never neighbours
        assert p["cost_s"] >= 0, name
    assert measured["last"]["pick"] == [3] and measured["last"]["cost_s"] == 0
    assert measured["proxy"]["cost_s"] > 0  # it distilled proxy students
    assert measured["proxy"]["distillations"] == pytest.approx(3.0) and measured["mi"]["distillations"] == 0
    assert measured["last"]["confidence"]["picks"] == [{"epoch": 3, "vs": 3, "verdict": "last"}]
    assert all(r["confidence"]["picks"][0]["epoch"] == r["pick"][0] for r in measured.values())


def test_a_policy_over_the_study_budget_is_recorded_with_its_refusal(finished_study):
    import dataclasses

    from ckptkd.study.runner import selection
    from ckptkd.trajectory import Run

    cfg, root, results = finished_study
    trajectory = Run(root / "cells" / "teacher" / "seed0").checkpoints()
    tight = selection(dataclasses.replace(cfg, budget=1.0), root, trajectory, "cpu")  # served from the cache
    assert tight["proxy"] == {"error": tight["proxy"]["error"]}
    assert tight["proxy"]["error"].startswith("policy proxy would spend 3.00 distillations")
    assert "; raise --budget (the study's top-level budget) to 3.00 or more" in tight["proxy"]["error"]
    assert tight["val-nll-1se"]["pick"] == results["selection"]["val-nll-1se"]["pick"]


def test_a_budget_sweep_records_proxy_at_each_budget_within_it(finished_study, monkeypatch, tmp_path):
    from ckptkd.report.selection import summary

    cfg, root, _ = finished_study
    swept = tmp_path / "swept"
    shutil.copytree(root, swept)
    calls = count_runs(monkeypatch)
    # a study budget of 0 refuses plain proxy; the sweep's points carry their own budgets
    results = run_study(from_dict(StudyConfig, {**TINY, "budget": 0, "budget_sweep": [0.5, 0, 3]}), swept,
                        progress=False)
    assert calls == []  # the sweep trains proxy students only, no cell
    sel = results["selection"]
    assert sel["proxy"]["error"].startswith("policy proxy would spend 3.00 distillations")
    assert sel["proxy@0"] == {"budget": 0.0, "error": sel["proxy@0"]["error"]}
    assert "cannot spend 0 distillations" in sel["proxy@0"]["error"]
    # 3 candidates, a 1-epoch student: one epoch each on a sixth of the training samples
    half = sel["proxy@0.5"]
    assert half["budget"] == 0.5 and half["proxy"]["epoch_fraction"] == 1.0
    assert half["distillations"] <= 0.5 and half["distillations"] == pytest.approx(0.5, abs=0.01)
    assert half["proxy"]["data_fraction"] == pytest.approx(1 / 6, abs=0.01) and half["cost_s"] > 0
    assert len(half["scores"]) == 3 and len(half["pick"]) == 1
    full = sel["proxy@3"]  # all of the data and the one epoch: plain proxy's training, so its scores
    assert full["proxy"] == {"epoch_fraction": 1.0, "data_fraction": 1.0} and full["distillations"] == 3
    assert full["scores"] == finished_study[2]["selection"]["proxy"]["scores"]
    assert half["scores"] != full["scores"]  # another cache key: its own proxy students

    def proxies(folder):
        return sum(r["kind"] == "proxy" for r in json.loads((folder / "selection/selection-cache.json").read_text()).values())
    assert proxies(swept) - proxies(root) == 6  # keyed by the fractions: each point trains its own three
    rows = {r["policy"]: r for r in report.table_selection(results)}
    assert rows["proxy@0.5"]["epoch"] == half["pick"][0] and rows["proxy@0.5"]["regret"] >= 0
    assert f"| proxy@0.5 | {half['pick'][0]} |" in report.render_markdown(results)
    assert {r["policy"] for r in summary([results]) if "note" not in r} >= {"proxy@0.5", "proxy@3", "last"}


def test_the_study_records_the_verdict_on_distilling_from_the_default_pick(finished_study):
    _, _, results = finished_study
    verdict = results["recommendation"]
    default = SelectConfig().policy
    assert verdict["policy"] == default and verdict["teacher"] == results["selection"][default]["pick"]
    # a pair of 1-epoch proxies costs 2 distillations: two pairs fit in the budget of 4
    assert verdict["evidence"]["pairs"] == 2 and isinstance(verdict["distil"], bool)
    from ckptkd.report.selection import judge_verdict, render_study

    judged = judge_verdict(results)
    g = report.groups(results)
    pick = g[f"ckpt-{verdict['teacher'][0]:04d}"]["mean"]
    assert judged["nokd_minus_pick"] == pytest.approx(g["nokd"]["mean"] - pick)
    nz = report.noise(results)
    assert judged["right"] == (None if abs(g["nokd"]["mean"] - pick) <= nz else
                               (g["nokd"]["mean"] > pick) == (not verdict["distil"]))
    assert f"Verdict on distilling ({default}'s pick): " in render_study(results, "tiny")


def test_trajectory_averages_teach_with_mean_probabilities(finished_study):
    _, root, results = finished_study
    avg = [r for r in results["students"] if r["group"] == "average"]
    assert {tuple(r["teacher_epochs"]) for r in avg} == {(1, 2, 3), (2, 3)}
    from ckptkd.trajectory import Run
    assert Run(root / "cells" / "student" / "avg-all" / "seed0").config["cell"]["combine"] == "probs"


def test_rerunning_a_finished_study_trains_nothing_and_gives_the_same_tables(finished_study, monkeypatch):
    cfg, root, results = finished_study
    calls = count_runs(monkeypatch)
    again = run_study(cfg, root, progress=False)
    assert calls == []
    assert report.render_markdown(again) == report.render_markdown(results)


def test_an_interrupted_study_runs_only_the_missing_cells(finished_study, monkeypatch):
    cfg, root, _ = finished_study
    (root / "cells" / "student" / "ckpt-0002" / "seed1" / "result.json").unlink()
    calls = count_runs(monkeypatch)
    run_study(cfg, root, progress=False)
    assert calls == ["student/ckpt-0002/seed1"]


def test_a_changed_student_config_reruns_the_students_but_not_the_teachers(finished_study, monkeypatch, tmp_path):
    cfg, root, _ = finished_study
    changed = from_dict(StudyConfig, {**TINY, "student_seeds": [0]})
    calls = count_runs(monkeypatch)
    run_study(changed, root, progress=False)
    assert calls == []  # seed 0 cells are the same cells: nothing to do
    changed = from_dict(StudyConfig, {**TINY, "kd": {"temperature": 2.0}, "student_seeds": [0]})
    calls = count_runs(monkeypatch)
    run_study(changed, root, progress=False)
    assert calls and all(c.startswith("student/") and c != "student/nokd/seed0" for c in calls)


def test_a_moved_study_runs_nothing_again(finished_study, monkeypatch, tmp_path):
    cfg, root, _ = finished_study
    results = run_study(cfg, root, progress=False)  # whatever earlier tests changed, finished again
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    calls = count_runs(monkeypatch)
    again = run_study(cfg, moved, progress=False)
    assert calls == []
    assert report.render_markdown(again) == report.render_markdown(results)


def test_cells_are_keyed_by_what_the_data_is_not_how_its_config_is_spelled(finished_study, monkeypatch):
    cfg, root, _ = finished_study
    run_study(cfg, root, progress=False)
    calls = count_runs(monkeypatch)
    run_study(from_dict(StudyConfig, {**TINY, "data": {**TINY["data"], "image_size": 8}}), root, progress=False)
    assert calls == []  # image_size means nothing to digits: the same arrays, the same cells
    noisy = from_dict(StudyConfig, {**TINY, "data": {**TINY["data"], "label_noise": 0.1}})
    assert cells_mod.cell_key(cells_mod.Cell("teacher/seed0", "teacher", 0, "teacher"), noisy) != \
        cells_mod.cell_key(cells_mod.Cell("teacher/seed0", "teacher", 0, "teacher"), cfg)


def synthetic_results():
    """A hand-made grid: checkpoint 2 teaches best, the score ranks checkpoints like the students."""
    students = []
    accs = {1: [0.80, 0.82], 2: [0.90, 0.92], 3: [0.85, 0.85]}
    for epoch, values in accs.items():
        for seed, acc in enumerate(values):
            students.append({"cell": f"student/ckpt-{epoch:04d}/seed{seed}", "acc": acc, "teacher_acc": 0.9,
                             "teacher_epochs": [epoch]})
    for name, acc in (("nokd", 0.7), ("ens-full", 0.95), ("snap-0002-0003", 0.93)):
        students += [{"cell": f"student/{name}/seed{s}", "acc": acc, "teacher_acc": 0.97, "teacher_epochs": [2, 3]}
                     for s in range(2)]
    analysis = [{"epoch": e, "ixf": x, "iyf": y, "score": sc} for e, x, y, sc in
                ((1, 5.0, 1.0, 0.5), (2, 4.0, 2.0, 1.5), (3, 3.0, 1.5, 0.8))]
    trajectory = [{"epoch": e, "train_acc": a, "test_acc": b} for e, a, b in ((1, .8, .8), (2, .95, .9), (3, 1., .92))]
    cfg = {"name": "synthetic", "info": {"estimator": "kde"}, "data": {"spec": "digits", "label_noise": 0.0},
           "teacher": {"model": "t"}, "student": {"model": "s"}, "student_seeds": [0, 1]}
    for s in students:
        s["group"], s["wall_s"] = ("ckpt" if "ckpt-" in s["cell"] else s["cell"].split("/")[1]), 2.0
    selection = {"mi": {"scores": [0.5, 1.5, 0.8], "pick": [2], "ensemble": [2, 3], "cost_s": 1.0},
                 "last": {"scores": [1, 2, 3], "pick": [3], "ensemble": [2, 3], "cost_s": 0.0},
                 "best-val": {"error": "policy best-val needs a validation split; set data.val_fraction > 0"}}
    return {"config": cfg, "students": students, "analysis": {"kde": analysis}, "trajectory": trajectory,
            "selection": selection}


def test_tables_of_a_synthetic_grid():
    r = synthetic_results()
    inter = {row["teacher"]: row for row in report.table_intermediate(r)}
    assert inter["full (last)"]["epoch"] == 3 and inter["best intermediate"]["epoch"] == 2
    assert inter["best intermediate"]["delta_vs_full"] == pytest.approx(0.91 - 0.85)
    assert inter["none (no KD)"]["student_mean"] == pytest.approx(0.7)
    terms = {row["rule"]: row for row in report.table_terms(r)}
    assert terms["kde: total (Algorithm 1)"]["epoch"] == 2 and terms["kde: total (Algorithm 1)"]["regret"] == 0
    assert terms["kde: I(X;F)"]["epoch"] == 1 and terms["kde: I(X;F)"]["regret"] == pytest.approx(0.10)
    assert terms["kde: total (Algorithm 1)"]["spearman"] == pytest.approx(1.0)
    assert terms["kde: I(X;F)"]["spearman"] == pytest.approx(-0.5)
    sel = {row["policy"]: row for row in report.table_selection(r)}
    nz = report.noise(r)  # pooled std of [.81, .81], [.91, .91] and [.85, .85]
    assert nz == pytest.approx(0.01 * 2 ** 0.5 * (2 / 3) ** 0.5)
    assert sel["mi"]["regret"] == 0 and sel["mi"]["delta_vs_last"] == pytest.approx(0.06)
    assert sel["mi"]["gap_recovered"] == pytest.approx(1.0)  # best - last = 0.06 > 2 x noise: all of it won back
    assert sel["last"]["regret_noise"] == pytest.approx(0.06 / nz) and sel["last"]["gap_recovered"] == 0
    assert sel["mi"]["cost"] == pytest.approx(0.5)  # 1 s of analysis against 2 s per full distillation
    assert sel["mi"]["k2_mean"] == pytest.approx(0.93)
    assert "error" in sel["best-val"]
    v = report.verdicts(r, "mi")
    assert v["within_noise_of_best"] and v["not_worse_than_last"]
    assert not report.verdicts(r, "last")["within_noise_of_best"]
    md = report.render_markdown(r)
    assert "| best intermediate | 2 |" in md and "best-val did not run: policy best-val needs a validation split" in md


def test_the_benchmark_judges_policies_by_their_worst_study():
    from ckptkd.report import selection as bench

    good, bad = synthetic_results(), synthetic_results()
    bad["selection"]["mi"] = {"scores": [1.5, 0.5, 0.8], "pick": [1], "ensemble": [1, 3], "cost_s": 9.0}
    rows = {row["policy"]: row for row in bench.summary([good, bad])}
    mi = rows["mi"]
    assert (mi["wins"], mi["ties"], mi["losses"]) == (1, 0, 1)
    assert mi["worst_regret_noise"] == pytest.approx((0.91 - 0.81) / report.noise(bad))
    assert mi["worst_recovery"] == pytest.approx((0.81 - 0.85) / 0.06)
    assert mi["meets"] == ["regret > noise", "below last by > noise", "recovers < 80% of the gap",
                           "costs > 1 distillation"]
    assert rows["best-val"]["note"] == "did not run on every study"
    assert "| last | 6.00 |" in bench.render_summary(bench.summary([good, bad]))


def test_spearman_and_mean_std_by_hand():
    assert report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert report.ranks([5, 1, 5]) == [2.5, 1.0, 2.5]
    m, s = report.mean_std([1.0, 3.0])
    assert (m, s) == (2.0, pytest.approx(2 ** 0.5))


def test_study_tables_and_plots_are_written(finished_study):
    _, root, results = finished_study
    paths = report.write_tables(results, root) + report.plot_study(results, root)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert json.loads((root / "tables.json").read_text())["verdicts"]["policy"] == SelectConfig().policy


def test_study_end_to_end_on_a_cifar_format_folder(tmp_path):
    write_fake_cifar(tmp_path / "cifar", num_classes=10, n_train=60, n_test=20, seed=0)
    cfg = from_dict(StudyConfig, {
        "name": "cifar-tiny", "data": {"spec": f"cifar10:{tmp_path / 'cifar'}"},
        "teacher": {"model": "resnet8", "epochs": 3, "save_every": 1, "batch_size": 30},
        "student": {"model": "mlp_xs", "epochs": 1, "batch_size": 30},
        "info": {"probe_size": 40}, "student_seeds": [0], "estimators": ["kde"],
    })
    results = run_study(cfg, tmp_path / "study", progress=False)
    groups = {r["cell"].split("/")[1] for r in results["students"]}
    assert len(results["students"]) == len(groups) and "| full (last) | 3 |" in report.render_markdown(results)


def test_every_invocation_is_logged_even_an_interrupted_one(monkeypatch, tmp_path):
    cfg = from_dict(StudyConfig, {**TINY, "student_seeds": [0], "estimators": ["kde"]})
    original = cells_mod.run_cell
    runs = []

    def interrupted_after_two(cell, *args, **kwargs):
        if len(runs) == 2:
            raise KeyboardInterrupt
        runs.append(cell.id)
        return original(cell, *args, **kwargs)

    monkeypatch.setattr("ckptkd.study.runner.run_cell", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path, progress=False)
    monkeypatch.setattr("ckptkd.study.runner.run_cell", original)
    results = run_study(cfg, tmp_path, progress=False)
    first, second = results["invocations"]
    assert (first["status"], first["cells_run"]) == ("interrupted", 2)
    assert (second["status"], second["cells_run"]) == ("finished", 2 + len(results["students"]) - 2)
    assert all(i["elapsed_s"] > 0 and i["jobs"] == 1 for i in (first, second))
    # a kill leaves a start line only; it is reported, without a time
    (tmp_path / "invocations.jsonl").open("a").write('{"event": "start", "id": "x", "jobs": 2}\n{"event": "e')
    from ckptkd.study.invocations import invocations
    assert invocations(tmp_path)[-1] == {"id": "x", "jobs": 2, "status": "killed", "cells_run": None,
                                         "elapsed_s": None}
