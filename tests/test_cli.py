"""The ``ckptkd`` command, run in-process through ``ckptkd.cli.main`` (one real subprocess at the end).

Every user mistake must end in exit status 2 and exactly one line on stderr, and must
leave the files that were already there untouched.
"""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ckptkd.config import SelectConfig
from ckptkd.cli import main
from ckptkd.trajectory import load_weights

TRAIN = ["--data", "digits", "--model", "mlp_xs", "--batch-size", "64", "--quiet"]


def ckptkd(capsys, *argv):
    """Run ``ckptkd ARGV...``; return (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, match):
    assert code == 2
    assert err.startswith("ckptkd: error:") and err.count("\n") == 1, err
    assert match in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``ckptkd train`` of mlp_xs on digits for 2 epochs, a checkpoint after each. Read-only."""
    path = tmp_path_factory.mktemp("cli") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *TRAIN, "--epochs", "2", "--save-every", "1", "--out", str(path)]) == 0
    return path, out.getvalue()


@pytest.fixture
def cli_run_copy(cli_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(cli_run[0], path)
    return path


def ckpt(run, epoch):
    return Path(run) / "checkpoints" / f"epoch_{epoch:04d}.safetensors"


# ---------------------------------------------------------------- commands that work


def test_models_lists_the_registered_architectures(capsys):
    code, out, _ = ckptkd(capsys, "models")
    assert code == 0
    assert {"mlp_xs", "cnn1d_l"} <= set(out.split())


def test_train_keeps_a_checkpoint_per_epoch(cli_run):
    path, out = cli_run
    assert ckpt(path, 1).exists() and ckpt(path, 2).exists()
    assert "2 checkpoints, test acc" in out
    assert json.loads((path / "manifest.json").read_text())["status"] == "complete"


def test_train_resume_of_a_finished_run_does_nothing(cli_run_copy, capsys, digest):
    before = digest(cli_run_copy)
    code, out, _ = ckptkd(capsys, "train", *TRAIN, "--epochs", "2", "--save-every", "1", "--out", cli_run_copy,
                          "--resume")
    assert code == 0 and "already complete (2 checkpoints)" in out
    assert digest(cli_run_copy) == before


def test_eval_prints_accuracy_and_loss(cli_run, capsys):
    code, out, _ = ckptkd(capsys, "eval", ckpt(cli_run[0], 2), "--data", "digits")
    assert code == 0
    assert "%  loss " in out and "epoch_0002.safetensors" in out


def test_eval_json_with_the_ensemble(cli_run, capsys):
    code, out, _ = ckptkd(capsys, "eval", ckpt(cli_run[0], 1), ckpt(cli_run[0], 2), "--data", "digits",
                          "--ensemble", "--json")
    assert code == 0
    results = json.loads(out)
    assert [r["checkpoint"].endswith(".safetensors") for r in results] == [True, True, False]
    assert results[2]["checkpoint"] == "ensemble (logits)"
    assert all(0 <= r["acc"] <= 1 for r in results)


def test_distill_a_student_from_two_checkpoints(cli_run, tmp_path, capsys):
    out_dir = tmp_path / "student"
    code, out, _ = ckptkd(capsys, "distill", "--teacher", ckpt(cli_run[0], 1), "--teacher", ckpt(cli_run[0], 2),
                          *TRAIN, "--epochs", "1", "--temperature", "2", "--out", out_dir)
    assert code == 0 and "student test acc" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["kind"] == "distill" and manifest["model"] == "mlp_xs" and manifest["status"] == "complete"
    config = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert config["kd"]["temperature"] == 2.0 and len(config["teachers"]) == 2


def test_analyze_writes_tables_and_plots_and_caches(cli_run_copy, capsys):
    argv = ["analyze", cli_run_copy, "--data", "digits", "--probe-size", "200", "--quiet"]
    code, first, _ = ckptkd(capsys, *argv)
    assert code == 0
    for name in ("analysis.json", "analysis.csv", "information_plane.png", "score.png"):
        assert (cli_run_copy / name).stat().st_size > 0, name
    rows = json.loads((cli_run_copy / "analysis.json").read_text())["rows"]
    assert [r["epoch"] for r in rows] == [1, 2]
    cache = (cli_run_copy / "analysis-cache.json").read_bytes()

    code, second, _ = ckptkd(capsys, *argv)  # served from the cache
    assert code == 0 and second == first
    assert (cli_run_copy / "analysis-cache.json").read_bytes() == cache


def test_select_prints_the_choice_as_json(cli_run_copy, capsys):
    # raw scaling: the score is I(X;F) + I(Y;F) as estimated, which this test can add up itself
    # (min-max scaling would tie two checkpoints whenever each wins one term; see test_algorithm1.py)
    code, out, _ = ckptkd(capsys, "select", cli_run_copy, "--json", "-k", "1", "--policy", "mi", "--probe-size", "200",
                          "--scaling", "raw", "--quiet")
    assert code == 0
    result = json.loads(out)
    assert sorted(r["epoch"] for r in result["ranking"]) == [1, 2]
    rows = json.loads((Path(cli_run_copy) / "analysis.json").read_text())["rows"]  # the estimates select used
    score = {r["epoch"]: r["ixf"] + r["iyf"] for r in rows}
    assert {r["epoch"]: r["score"] for r in result["ranking"]} == pytest.approx(score)
    assert abs(score[1] - score[2]) > 1e-6, "the two checkpoints tie; the test would accept either"
    assert [c["epoch"] for c in result["chosen"]] == [max(score, key=score.get)]
    assert [r["epoch"] for r in result["ranking"]] == sorted(score, key=score.get, reverse=True)


@pytest.fixture
def foreign_folder(cli_run, tmp_path):
    """The CLI run's checkpoints re-saved as DDP-style .pt state_dicts."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    for epoch in (1, 2):
        state = load_weights(ckpt(cli_run[0], epoch))
        torch.save({f"module.{k}": v for k, v in state.items()}, folder / f"model_epoch{epoch}.pt")
    return folder


def test_analyze_and_select_a_folder_of_foreign_checkpoints(foreign_folder, capsys):
    code, out, _ = ckptkd(capsys, "analyze", foreign_folder, "--model", "mlp_xs", "--data", "digits",
                          "--probe-size", "200", "--quiet")
    assert code == 0 and "<- best" in out
    assert (foreign_folder / "analysis.json").exists()

    code, out, _ = ckptkd(capsys, "select", foreign_folder, "--policy", "val-nll-1se", "--model", "mlp_xs",
                          "--data", "digits", "--json", "-k", "2", "--quiet")
    assert code == 0
    assert [c["epoch"] for c in json.loads(out)["chosen"]] == [1, 2]


def test_foreign_folder_without_model_is_an_error(foreign_folder, capsys):
    code, _, err = ckptkd(capsys, "select", foreign_folder, "--policy", "last")
    assert_user_error(code, err, "--model")


# ---------------------------------------------------------------- user mistakes


def test_unknown_model_suggests_the_closest_and_creates_nothing(tmp_path, capsys):
    code, _, err = ckptkd(capsys, "train", "--data", "digits", "--model", "mlp_xx", "--out", tmp_path / "new")
    assert_user_error(code, err, "did you mean 'mlp_xs'")
    assert not (tmp_path / "new").exists()


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    code, _, err = ckptkd(capsys, "train", "--data", "mnist2d", "--model", "mlp_xs", "--out", tmp_path / "new")
    assert_user_error(code, err, "unknown dataset 'mnist2d'")
    assert not (tmp_path / "new").exists()


def test_negative_epochs_is_one_line(tmp_path, capsys):
    code, _, err = ckptkd(capsys, "train", *TRAIN, "--epochs", "-1", "--out", tmp_path / "new")
    assert_user_error(code, err, "epochs must be a positive integer, got -1")
    assert not (tmp_path / "new").exists()


def test_missing_checkpoint_file(tmp_path, capsys):
    code, _, err = ckptkd(capsys, "eval", tmp_path / "epoch_0009.safetensors", "--data", "digits")
    assert_user_error(code, err, "does not exist")


def test_truncated_checkpoint(cli_run_copy, capsys, digest):
    weights = ckpt(cli_run_copy, 2)
    weights.write_bytes(weights.read_bytes()[:1000])
    before = digest(cli_run_copy)
    code, _, err = ckptkd(capsys, "eval", weights, "--data", "digits")
    assert_user_error(code, err, "sha256")
    assert digest(cli_run_copy) == before


def test_teacher_of_another_architecture(cli_run, tmp_path, capsys, digest):
    before = digest(cli_run[0])
    code, _, err = ckptkd(capsys, "distill", "--teacher", ckpt(cli_run[0], 2), "--teacher-model", "cnn1d_xs",
                          *TRAIN, "--out", tmp_path / "student")
    assert_user_error(code, err, "was saved by ckptkd as 'mlp_xs', not 'cnn1d_xs'")
    assert digest(cli_run[0]) == before
    assert not (tmp_path / "student").exists()


def test_teacher_trained_on_another_number_of_classes(cli_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x=rng.normal(size=(30, 1, 8, 8)).astype(np.float32), y=np.arange(30) % 3,
             x_test=rng.normal(size=(9, 1, 8, 8)).astype(np.float32), y_test=np.arange(9) % 3)
    code, _, err = ckptkd(capsys, "distill", "--teacher", ckpt(cli_run[0], 2), "--data", f"npz:{tmp_path / 'three.npz'}",
                          "--model", "mlp_xs", "--quiet", "--out", tmp_path / "student")
    assert_user_error(code, err, "classes")
    assert not (tmp_path / "student").exists()


def test_config_key_typo_in_a_yaml_file(tmp_path, capsys):
    (tmp_path / "train.yaml").write_text("data: {spec: digits}\ntrain: {model: mlp_xs, lrr: 0.1}\n")
    code, _, err = ckptkd(capsys, "train", "--config", tmp_path / "train.yaml", "--out", tmp_path / "new")
    assert_user_error(code, err, "unknown config key 'train.lrr' (did you mean 'lr'?)")
    assert not (tmp_path / "new").exists()


def test_output_folder_holding_a_different_run(cli_run, capsys, digest):
    before = digest(cli_run[0])
    code, _, err = ckptkd(capsys, "train", *TRAIN, "--epochs", "3", "--out", cli_run[0])
    assert_user_error(code, err, "already holds a different run; pass --resume to continue it, --overwrite")
    assert digest(cli_run[0]) == before


def test_output_folder_with_other_files(tmp_path, capsys, digest):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("\\chapter{Results}")
    before = digest(tmp_path / "out")
    code, _, err = ckptkd(capsys, "train", *TRAIN, "--epochs", "1", "--out", tmp_path / "out", "--overwrite")
    assert_user_error(code, err, "not a ckptkd run")
    assert digest(tmp_path / "out") == before


def test_bad_flags_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "digits"])  # no --out
    err = capsys.readouterr().err
    assert_user_error(exit_.value.code, err, "the following arguments are required: --out")


def test_real_process_prints_one_line_and_exits_2(tmp_path, ckptkd_cache):
    script = Path(sys.executable).with_name("ckptkd")
    command = [str(script)] if script.exists() else [sys.executable, "-c",
                                                     "import sys; from ckptkd.cli import main; sys.exit(main())"]
    env = {**os.environ, "CKPTKD_CACHE": str(ckptkd_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*command, "train", *TRAIN, "--epochs", "-1", "--out", str(tmp_path / "new")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ckptkd: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- ckptkd run, end to end

RUN_CONFIG = {
    "data": {"spec": "digits"},
    "teacher": {"model": "mlp_s", "epochs": 4, "save_every": 2, "batch_size": 64},
    "student": {"model": "mlp_xs", "epochs": 2, "batch_size": 64},
    "info": {"probe_size": 200},
    "seed": 0,
}


def table(stdout: str) -> list[str]:
    """The results table: the lines after the one that names the output folder, without the
    compression line (its latencies are timings) and the pick's confidence and verdict lines."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ckptkd run:")) + 1
    return [line for line in lines[start:] if not line.startswith(("compression:", "confidence:", "verdict:"))]


@pytest.fixture(scope="module")
def finished_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    (root / "run.yaml").write_text(yaml.safe_dump(RUN_CONFIG))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", str(root / "run.yaml"), "--out", str(root / "a"), "--quiet"]) == 0
    return root, out.getvalue()


def test_run_prints_the_comparison_table(finished_pipeline):
    root, stdout = finished_pipeline
    assert stdout.splitlines()[0] == "augmentation: shift (default for digits)"
    rows = table(stdout)[2:]  # under the column heads and the rule
    assert [re.split(r"\s{2,}", row)[0] for row in rows] == ["no KD", "full teacher", f"chosen ({SelectConfig().policy})"]
    assert re.match(r"full teacher\s+epoch 4\s", rows[1])
    result = json.loads((root / "a" / "pipeline.json").read_text())
    assert result["status"] == "complete" and len(result["rows"]) == 3


def test_run_prints_the_verdict_and_pipeline_json_carries_it(finished_pipeline):
    root, stdout = finished_pipeline
    result = json.loads((root / "a" / "pipeline.json").read_text())
    verdict, confidence = result["recommendation"], result["confidence"]
    chosen = result["rows"][2]["teacher"]
    assert verdict["distil"] is True and chosen == "epoch " + "+".join(str(e) for e in verdict["teacher"])
    # a proxy of 1 of the student's 2 epochs costs 0.5 distillations: two pairs need 2.0, the budget is 1
    assert verdict["reason"] == ("distil: no KD was not compared (2 paired proxy seeds would spend 2.00 "
                                 "distillations and the budget leaves 1.00); raise --budget to 2.00 or more to "
                                 "compare it")
    lines = stdout.splitlines()
    assert f"verdict: {verdict['reason']}" in lines and f"confidence: {confidence['statement']}" in lines
    assert len(result["rows"]) == 3  # both students are still reported


def test_run_ends_with_the_compression_line(finished_pipeline):
    from ckptkd import create_model
    from ckptkd.export import count_params

    root, stdout = finished_pipeline
    params = {m: count_params(create_model(m, 10, (1, 8, 8))) for m in ("mlp_xs", "mlp_s")}
    last = stdout.splitlines()[-1]
    m = re.fullmatch(r"compression: student mlp_xs ([\d,]+) parameters vs teacher mlp_s \(epoch 4\) ([\d,]+) "
                     r"\(([\d.]+)x fewer\); CPU latency per sample ([\d.]+) ms vs ([\d.]+) ms \(([\d.]+)x (faster|slower)\), "
                     r"batch 1, \d+ threads?", last)
    assert m, last
    assert int(m[1].replace(",", "")) == params["mlp_xs"] and int(m[2].replace(",", "")) == params["mlp_s"]
    assert float(m[4]) > 0 and float(m[5]) > 0
    recorded = json.loads((root / "a" / "pipeline.json").read_text())["compression"]
    assert recorded["student_params"] == params["mlp_xs"] and recorded["teacher"] == "mlp_s (epoch 4)"


def test_run_is_reproducible_for_a_seed(finished_pipeline, capsys):
    root, stdout = finished_pipeline
    code, again, _ = ckptkd(capsys, "run", root / "run.yaml", "--out", root / "b", "--quiet")
    assert code == 0
    assert table(again) == table(stdout)


def test_run_resume_of_a_finished_run_trains_nothing(finished_pipeline, capsys, monkeypatch):
    root, stdout = finished_pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("--resume of a finished run must not train")

    # ``ckptkd.train`` is also the name of a function, so reach the modules through sys.modules
    monkeypatch.setattr(sys.modules["ckptkd.train"], "fit", no_training)
    monkeypatch.setattr(sys.modules["ckptkd.distill.api"], "fit", no_training)
    code, again, _ = ckptkd(capsys, "run", root / "run.yaml", "--out", root / "a", "--resume", "--quiet")
    assert code == 0
    assert table(again) == table(stdout)


def test_run_into_a_finished_folder_without_resume_is_refused(finished_pipeline, capsys, digest):
    root, _ = finished_pipeline
    before = digest(root / "a")
    code, _, err = ckptkd(capsys, "run", root / "run.yaml", "--out", root / "a", "--quiet")
    assert_user_error(code, err, "already holds a run")
    assert digest(root / "a") == before


def test_error_during_a_progress_bar_starts_its_own_line(capsys, monkeypatch):
    from tqdm import tqdm

    from ckptkd.cli import commands
    from ckptkd.errors import CkptkdError

    def fails_halfway(args, overrides):
        bar = tqdm(total=10, desc="work", leave=False)  # held open, as a loop's bar is
        bar.update(5)
        raise CkptkdError("the data went away; put it back")

    monkeypatch.setattr(commands, "models", fails_halfway)
    code, _, err = ckptkd(capsys, "models")
    assert code == 2
    assert "work" in err  # the bar was drawn, then cleared
    assert err.rsplit("\r", 1)[-1] == "ckptkd: error: the data went away; put it back\n"
