"""The selection budget, the verdict on distilling, and the statement of confidence.

Known answers by hand where the rule is arithmetic (spend, judge, compare_with_last); the
rest on ``trained_run`` (mlp_xs on digits, 3 checkpoints) with a 2-epoch mlp_xs student.
"""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ckptkd import Checkpoint, CkptkdError, StageConfig
from ckptkd.config import InfoConfig, ProxyConfig, RunConfig, from_dict
from ckptkd.select import SelectionContext, choose, get_policy, policy_scores
from ckptkd.select.budget import check_budget, check_budget_value
from ckptkd.select.confidence import Evidence, compare_with_last, statement
from ckptkd.select.verdict import judge, recommend

STUDENT = StageConfig(model="mlp_xs", epochs=2, batch_size=64)
HALF = ProxyConfig(epoch_fraction=0.5, data_fraction=0.5)  # 1 of 2 epochs on half the data: 0.25 each


def _ctx(data, folder=None, budget=1.0, student=STUDENT, proxy=HALF):
    return SelectionContext(data, folder=folder, info=InfoConfig(probe_size=100), student=student, proxy=proxy,
                            budget=budget)


# ---------------------------------------------------------------- the budget


def test_each_policy_declares_its_spend_in_distillations(trained_run, digits):
    ckpts = trained_run.checkpoints()
    ctx = _ctx(digits)
    n = len(digits.y_train)
    assert get_policy("proxy").spend(ckpts, ctx).distillations == pytest.approx(3 * 0.5 * round(n / 2) / n)
    assert get_policy("proxy-full").spend(ckpts, ctx).distillations == pytest.approx(3 * round(n / 3) / n)
    for name in ("last", "val-nll-1se", "mi", "aum-fit", "label-wave"):
        assert get_policy(name).spend(ckpts, ctx).distillations == 0.0, name


def test_a_policy_over_the_budget_is_refused_before_it_spends(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()
    ctx = _ctx(digits, tmp_path, budget=0.5)
    with pytest.raises(CkptkdError, match=r"^policy proxy would spend 0\.75 distillations \(3 candidates x 0\.50 of "
                                          r"the student's epochs x 0\.50 of its training data\) and the budget is "
                                          r"0\.50; raise --budget \(select\.budget\) to 0\.75 or more, or lower"):
        policy_scores("proxy", ckpts, ctx)
    assert not (tmp_path / "selection-cache.json").exists() and not (tmp_path / "teacher-cache").exists()
    with pytest.raises(CkptkdError, match=r"would spend 1\.00 distillations .* and the budget is 0\.00"):
        choose("proxy-full", ckpts, _ctx(digits, budget=0))
    assert check_budget(["proxy"], ckpts, _ctx(digits, budget=0.75)).distillations == pytest.approx(0.75, abs=0.005)


def test_a_union_shares_one_budget(trained_run, digits):
    ckpts = trained_run.checkpoints()
    with pytest.raises(CkptkdError, match=r"^policies proxy\+proxy-full would spend 1\.75 distillations"):
        choose("proxy+proxy-full", ckpts, _ctx(digits, budget=1.5))


def test_probes_fit_a_budget_of_zero(trained_run, digits):
    ckpts = trained_run.checkpoints()
    for name in ("val-nll-1se", "aum-fit", "label-wave", "last"):
        assert len(choose(name, ckpts, _ctx(digits, budget=0))) == 1, name


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
def test_a_budget_must_be_a_finite_number_at_least_zero(bad, digits):
    with pytest.raises(CkptkdError, match="must be a number of full distillations >= 0"):
        check_budget_value(bad)
    if isinstance(bad, float) or bad == -1:  # the config's own check of finite floats names the key first
        with pytest.raises(CkptkdError, match=r"select.budget' must be a finite number|^select.budget must be a "
                                              r"number of full distillations >= 0"):
            from_dict(RunConfig, {"select": {"budget": bad}})


# ---------------------------------------------------------------- the verdict


def test_judge_says_do_not_distil_only_when_no_kd_is_ahead_by_more_than_one_se():
    out = judge([20], kd_acc=[0.80, 0.82, 0.81], nokd_acc=[0.85, 0.86, 0.84], spent=0.6)
    # d = 0.05, 0.04, 0.03: mean 0.04, SE = 0.01 / sqrt(3) = 0.0058
    assert out["distil"] is False and out["teacher"] == [20]
    assert out["evidence"]["d"] == pytest.approx(0.04) and out["evidence"]["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert out["reason"].startswith("do not distil: a proxy student trained on the labels alone beats the teacher's "
                                    "proxy students by 4.00 ± 0.58 points")
    tied = judge([20], kd_acc=[0.80, 0.84], nokd_acc=[0.83, 0.82], spent=0.4)  # d = 0.03, -0.02: mean 0.005 < SE 0.025
    assert tied["distil"] is True and "tied within the noise" in tied["reason"]
    ahead = judge([20], kd_acc=[0.90, 0.91], nokd_acc=[0.85, 0.87], spent=0.4)
    assert ahead["distil"] is True and "ahead of no KD by 4.50" in ahead["reason"]


def test_without_evidence_the_verdict_is_distil_and_says_no_kd_was_not_compared(trained_run, digits):
    chosen = trained_run.checkpoints()[-1:]
    out = recommend(chosen, _ctx(digits, student=None))
    assert out["distil"] is True and out["evidence"] is None and out["spent"] == 0.0
    assert out["reason"] == ("distil: no KD was not compared (selection has no student settings); give a student "
                             "section in --config or --student-model to compare it")
    out = recommend(chosen, _ctx(digits, budget=0.9), spent=0.5)  # 2 pairs x 2 proxies x 0.25 = 1.0 > 0.4 left
    assert out["distil"] is True and "no KD was not compared (2 paired proxy seeds would spend 1.00 distillations " \
                                      "and the budget leaves 0.40); raise --budget to 1.50 or more" in out["reason"]


class _Poison:
    def __getattr__(self, name):
        raise AssertionError(f"the verdict read the test split (.{name})")

    def __len__(self):
        raise AssertionError("the verdict read the test split (len)")

    def __getitem__(self, i):
        raise AssertionError("the verdict read the test split (indexing)")


def test_the_verdict_pairs_proxy_students_over_seeds_within_the_budget(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()
    poisoned = dataclasses.replace(digits, x_test=_Poison(), y_test=_Poison())
    ctx = _ctx(poisoned, tmp_path, budget=1.0)  # a pair costs 0.5: two pairs
    out = recommend(ckpts[-1:], ctx)
    ev = out["evidence"]
    assert ev["pairs"] == 2 and out["spent"] == pytest.approx(1.0, abs=0.01)
    records = json.loads((tmp_path / "selection-cache.json").read_text()).values()
    nokd = {r["proxy_seed"]: r["val_acc"] for r in records if r["kind"] == "proxy-nokd"}
    assert ev["nokd_val_acc"] == [nokd[HALF.seed], nokd[HALF.seed + 1]]  # pair j: the no-KD proxy of seed j
    assert ev["kd_val_acc"][0] == ctx.proxy(ckpts[-1])["val_acc"]  # pair 0 is policy proxy's own record
    assert out == {**judge([ckpts[-1].epoch], ev["kd_val_acc"], ev["nokd_val_acc"], 1.0), "spent": out["spent"]}
    assert recommend(ckpts[-1:], _ctx(poisoned, tmp_path, budget=1.0)) == out  # read back: nothing trained again
    three = recommend(ckpts[-1:], _ctx(poisoned, tmp_path, budget=5.0))
    assert three["evidence"]["pairs"] == 3 and three["evidence"]["kd_val_acc"][:2] == ev["kd_val_acc"]


def test_the_verdict_does_not_count_again_the_proxy_policys_own_pair_0(trained_run, digits, tmp_path):
    """Policy proxy trained pair 0's KD proxy of its pick: the verdict reuses it at no cost, so
    a budget of 1.50 (proxy 0.75 + 2 pairs of 0.50, less the reused 0.25) covers two pairs, and
    the total reported is what the cache holds: six proxies of 0.25."""
    ckpts = trained_run.checkpoints()
    ctx = _ctx(digits, tmp_path, budget=1.5)
    spend = check_budget(["proxy"], ckpts, ctx)
    picked = choose("proxy", ckpts, ctx)
    out = recommend(picked, ctx, spent=spend.distillations, parts=["proxy"])
    assert out["evidence"] is not None and out["evidence"]["pairs"] == 2
    assert out["spent"] == pytest.approx(0.75, abs=0.01)
    records = list(json.loads((tmp_path / "selection-cache.json").read_text()).values())
    trained = [r for r in records if r["kind"] in ("proxy", "proxy-nokd", "proxy-ensemble")]
    assert len(trained) == 6  # 3 candidates, pair 1's KD proxy, 2 no-KD proxies
    assert spend.distillations + out["spent"] == pytest.approx(0.25 * len(trained), abs=0.01)
    # another policy's pick trains its own pair 0, and the same budget leaves too little for two pairs
    short = recommend(picked, _ctx(digits, budget=1.5), spent=0.75, parts=["val-nll-1se"])
    assert short["evidence"] is None and "raise --budget to 1.75 or more" in short["reason"]
    # a union that picks two checkpoints distils an ensemble: nothing of policy proxy's is reused
    assert recommend(ckpts[:2], _ctx(digits, budget=1.75), spent=0.75, parts=["proxy", "last"])["spent"] == \
        pytest.approx(1.0, abs=0.01)


# ---------------------------------------------------------------- confidence


def _ck(epochs):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


def test_compare_with_last_is_paired_over_the_samples():
    last = torch.tensor([0.0, 1.0, 0.0, 1.0] * 25)
    ahead = last + torch.tensor([0.3, 0.1] * 50)  # d = 0.2, paired spread 0.1: SE = 0.1005 / 10
    ckpts = _ck([1, 2])
    row = compare_with_last(Evidence([ahead, last], "nats", "samples"), ckpts, ckpts[0])
    assert row["d"] == pytest.approx(0.2) and row["se"] == pytest.approx(float(torch.tensor([0.3, 0.1] * 50).std()) / 10)
    assert row["verdict"] == "ahead" and row["n"] == 100
    noisy = last + torch.tensor([1.0, -0.98] * 50)  # d = 0.01 with SE 0.099: tied, although unpaired means differ
    assert compare_with_last(Evidence([noisy, last], "nats", "samples"), ckpts, ckpts[0])["verdict"] == "tied"
    behind = compare_with_last(Evidence([last - 0.5, last], "nats", "samples"), ckpts, ckpts[0])
    assert behind["verdict"] == "behind" and behind["d"] == pytest.approx(-0.5)


def test_statements_for_the_last_a_measured_and_an_unmeasured_pick(trained_run, digits):
    ckpts = trained_run.checkpoints()
    ctx = _ctx(digits)
    assert statement("last", ckpts, ckpts[-1:], ctx)["statement"] == f"epoch {ckpts[-1].epoch} is the last checkpoint"
    first = statement("val-nll", ckpts, ckpts[:1], ctx)
    row = first["picks"][0]
    assert row["verdict"] in ("ahead", "tied", "behind") and row["n"] == len(digits.y_val)
    nll = [torch.tensor(ctx.val_metrics(c)["nll_ts_samples"], dtype=torch.float64) for c in (ckpts[0], ckpts[-1])]
    assert row["d"] == pytest.approx(float((nll[1] - nll[0]).mean()))  # the pick's NLL below last's is ahead
    assert "nats of validation NLL (paired, n = 144 validation samples)" in first["statement"]
    halfway = statement("halfway", ckpts, ckpts[1:2], ctx)
    assert halfway["picks"][0]["verdict"] == "unmeasured" and "keeps no per-sample evidence" in halfway["statement"]


# ---------------------------------------------------------------- the flag on every command


def test_budget_flag_reaches_the_config_of_run_and_study_and_the_context_of_select(run_copy, tmp_path, capsys):
    from ckptkd.cli import _overrides, build_parser, main
    from ckptkd.config import StudyConfig, load_config

    parser = build_parser()
    run_cfg = load_config(RunConfig, None, _overrides(parser.parse_args(["run", "--budget", "0.5"])))
    assert run_cfg.select.budget == 0.5 and load_config(RunConfig, None, {}).select.budget == 1.0
    study = tmp_path / "study.yaml"
    study.write_text("name: tiny\ndata: {spec: digits}\n")
    args = parser.parse_args(["study", str(study), "--budget", "2.5"])
    assert load_config(StudyConfig, args.config_file, _overrides(args)).budget == 2.5
    # select: --budget decides what the verdict may spend; 0 compares nothing and says so
    # (the student from --config: as flags, with nothing to train them, they would be refused)
    student = tmp_path / "student.yaml"
    student.write_text("data: {spec: digits}\nstudent: {model: mlp_xs, epochs: 2}\n")
    argv = ["select", str(run_copy.path), "--policy", "val-nll-1se", "--config", str(student), "--json", "--quiet"]
    assert main([*argv, "--budget", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"] == 0 and out["distillations"] == 0 and out["recommendation"]["evidence"] is None
    assert "budget leaves 0.00" in out["recommendation"]["reason"]
    assert out["confidence"]["picks"][0]["epoch"] == out["chosen"][0]["epoch"]


def test_select_prints_the_confidence_and_the_verdict_with_the_pick(run_copy, capsys):
    from ckptkd.cli import main

    assert main(["select", str(run_copy.path), "--policy", "val-nll", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    chosen = next(i for i, line in enumerate(lines) if line.startswith("chosen (val-nll, k=1): epoch "))
    assert lines[chosen + 1].startswith("confidence: epoch ")
    assert lines[chosen + 2] == ("verdict: distil: no KD was not compared (selection has no student settings); give a "
                                 "student section in --config or --student-model to compare it")
    assert lines[chosen + 3] == "spent 0.00 of a budget of 1.00 distillations"


def test_select_student_flags_set_the_verdicts_proxy_students(run_copy, capsys):
    """With a policy that trains nothing, ``--student-model`` still acts: the verdict's proxy
    students are that model (refused only where the verdict trains none either)."""
    from ckptkd.cli import main

    argv = ["select", str(run_copy.path), "--policy", "best-val", "--student-model", "mlp_xs", "--student-epochs", "10",
            "--json", "--quiet"]
    assert main(argv) == 0
    verdict = json.loads(capsys.readouterr().out)["recommendation"]
    assert verdict["evidence"] is not None and verdict["evidence"]["pairs"] >= 2 and verdict["spent"] > 0


@pytest.mark.parametrize("argv", [["--policy", "last"], ["--policy", "halfway"],
                                  ["--policy", "explicit", "--checkpoints", "2"]])
def test_select_with_a_policy_of_the_epochs_alone_prints_its_verdict(run_copy, capsys, argv):
    """No data is loaded for last, halfway or explicit (no SelectionContext): the text output
    still ends with what was spent, and the verdict's advice is one the command accepts."""
    from ckptkd.cli import main

    assert main(["select", str(run_copy.path), *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "spent 0.00 of a budget of 1.00 distillations"
    assert lines[-2] == ("verdict: distil: no KD was not compared (selection read no data: its policy scores the "
                         "checkpoints' epochs alone); choose a policy that reads the data (e.g. val-nll-1se) and "
                         "give a student section in --config or --student-model to compare it")
