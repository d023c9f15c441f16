"""scripts/gpu_check.sh without a GPU: the CPU half of check 1 (what CI runs), the whole list
on CPU as a dry run, a failing check recorded while the next one runs, and --write-docs.

The CUDA half cannot run here; these tests run every line of the script that a CPU can.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckptkd.select import POLICIES

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.fixture
def gpu_check(monkeypatch):
    """The script as a module (its import sets CUBLAS_WORKSPACE_CONFIG: keep that out of os.environ)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its checks (scripts/gpu_checks/) are imported once, and stay
    return module


def run_script(cmd: list[str], **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_without_cuda_the_script_runs_the_cpu_half_of_check_1_and_exits_0(tmp_path):
    proc = run_script(["bash", "scripts/gpu_check.sh", "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("no CUDA: ") for line in lines) == 1, proc.stdout
    assert any(line.startswith("ok   1 cpu_vs_cuda CPU half only:") for line in lines), proc.stdout

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["format"] == "ckptkd-gpu-check" and report["ok"] is True
    assert report["device"] == "cpu" and report["dry_run"] is False and report["profile"]["name"] == "tiny"
    assert report["no_cuda"].startswith("no CUDA: ") and report["environment"]["cuda_available"] is False
    assert list(report["checks"]) == ["cpu_vs_cuda"]
    check = report["checks"]["cpu_vs_cuda"]
    assert check["status"] == "ok" and check["error"] is None
    fig = check["figures"]
    assert fig["checkpoints"] == 4 and fig["n_test"] == 128 and fig["classes"] == 10
    assert fig["cpu_logits_finite"] is True and fig["cpu_acc_matches_evaluate"] is True
    assert fig["cpu_test_acc"] > 0.5  # the synthetic images carry a learnable signal (chance: 0.1)
    assert "fp32" not in fig  # no CUDA half without CUDA


def test_dry_run_runs_every_check_on_cpu(tmp_path):
    proc = run_script([sys.executable, str(SCRIPT), "--device", "cpu", "--force", "--profile", "tiny",
                       "--out", str(tmp_path), "--work", str(tmp_path / "work")],
                      TORCH_COMPILE_DISABLE="1")  # compiling on CPU takes a minute; the path to it still runs
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = report["checks"]
    names = ["cpu_vs_cuda", "train", "ensemble", "cache", "compile", "torchrun", "throughput", "paper"]
    assert list(checks) == names and report["dry_run"] is True and report["no_cuda"] is None
    assert {n: c["status"] for n, c in checks.items()} == dict.fromkeys(names, "ok"), proc.stdout
    assert [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("ok ")] == names

    fig = {n: c["figures"] for n, c in checks.items()}
    assert fig["cpu_vs_cuda"]["fp32"] == {"argmax_agreement": 1.0, "max_abs_diff": 0.0}  # CPU against CPU
    assert fig["train"]["inside"]["dtype"] == ["float32"] and fig["train"]["inside"]["channels_last"] == [False]
    assert fig["train"]["cli"]["complete"] is True
    assert fig["ensemble"]["fp32_max_abs_diff"] <= 1e-3 and fig["ensemble"]["auto_uses_vmap"] is False
    assert set(fig["ensemble"]["student_acc"]) == {"loop", "vmap", "cli_auto"}
    assert fig["cache"]["rerun_identical"] is True and fig["cache"]["vs_no_cache_identical"] is True
    assert fig["cache"]["targets"]["max_abs_diff"] == 0.0 and fig["cache"]["targets"]["batches_missing_from_cache"] == 0
    assert fig["compile"]["compile_disabled"] is True and fig["compile"]["steps"] >= 1
    assert fig["torchrun"]["runs"]["1"]["complete"] is True and fig["torchrun"]["syncbatchnorm_exercised"] is False
    kd = fig["throughput"]["kd"]
    assert set(kd["samples_per_s"]) == {"ce", "kd_cache", "kd_recompute"} and kd["kd_cache/ce"] > 0
    assert set(fig["throughput"]["ensembles"]["2"]) == {"forward_b64", "kd_recompute"}
    policies = fig["paper"]["policies"]
    assert list(policies) == list(POLICIES)  # every policy ckptkd.select lists, found at run time
    assert all("student_acc" in v or "skipped" in v for v in policies.values())
    assert "student_acc" in policies["mi"] and "student_acc" in policies["last"]


def test_a_failing_check_is_a_fail_line_and_the_next_check_runs(gpu_check, tmp_path, monkeypatch, capsys):
    def boom(ctx, fig):
        fig["half"] = 1
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(gpu_check.CHECK_FUNCTIONS, "train", boom)
    monkeypatch.setitem(gpu_check.CHECK_FUNCTIONS, "cache", lambda ctx, fig: (True, "fine"))
    rc = gpu_check.main(["--device", "cpu", "--force", "--only", "train,cache", "--out", str(tmp_path)])
    assert rc == 1
    out = capsys.readouterr().out
    assert "FAIL 2 train       RuntimeError: boom  (" in out and "ok   2 cache       fine  (" in out
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] is False
    train = report["checks"]["train"]
    assert train["status"] == "FAIL" and train["error"] == "RuntimeError: boom" and train["figures"] == {"half": 1}
    assert report["checks"]["cache"]["status"] == "ok"


def test_cpu_without_force_and_unknown_checks_are_refused(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert gpu_check.main(["--device", "cpu", "--force", "--only", "cahce", "--out", str(tmp_path)]) == 2
    assert "unknown check 'cahce'" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def fake_report() -> dict:
    """A gpu_check.json as a full CUDA run writes it (figures made up, every key the table reads)."""
    forward = {"loop_ms": 4.0, "vmap_ms": 2.0, "vmap/loop": 0.5, "autocast": True}
    return {
        "format": "ckptkd-gpu-check", "version": 1, "device": "cuda", "dry_run": False, "started": "2026-12-01T10:00:00",
        "wall_s": 401.0, "profile": {"name": "full"},
        "environment": {"torch": "2.13.0+cu128", "cuda": "12.8", "gpu": "Fake GPU 80GB"},
        "checks": {
            "cpu_vs_cuda": {"status": "ok", "figures": {
                "fp32": {"argmax_agreement": 0.999, "max_abs_diff": 2e-6},
                "cuda_defaults": {"argmax_agreement": 1.0, "max_abs_diff": 3e-3},
                "bf16": {"argmax_agreement": 0.998, "max_abs_diff": 0.05}}},
            "train": {"status": "ok", "figures": {"cli": {"samples_per_s": 12345.6},
                                                  "inside": {"dtype": ["bfloat16"], "channels_last": [True]}}},
            "ensemble": {"status": "FAIL", "figures": {"fp32_max_abs_diff": 2e-3, "autocast_max_abs_diff": 0.1,
                                                       "auto_uses_vmap": True}},
            "cache": {"status": "ok", "figures": {"build_s": 1.5, "targets": {"max_abs_diff": 0.02, "mean_abs_diff": 0.001},
                                                  "rerun_identical": True, "vs_no_cache_identical": False}},
            "compile": {"status": "FAIL", "error": "BackendCompilerFailed: no compiler", "figures": {"steps": 237}},
            "torchrun": {"status": "ok", "figures": {"runs": {"1": {"complete": True}}, "syncbatchnorm_exercised": False}},
            "throughput": {"status": "ok", "figures": {
                "kd": {"samples_per_s": {"ce": 20000, "kd_cache": 19000, "kd_recompute": 9000}, "kd_cache/ce": 1.0526,
                       "kd_recompute/kd_cache": 2.11},
                "ensembles": {str(k): {"forward_b128": forward, "forward_b1024": forward,
                                       "kd_recompute": {"loop_samples_per_s": 5000, "vmap_samples_per_s": 7000,
                                                        "vmap/loop_time": 0.71}} for k in (2, 4)}}},
            "paper": {"status": "partial", "figures": {"teacher_acc": 0.5, "policies": {
                "last": {"epochs": [4], "student_acc": 0.4}, "explicit": {"skipped": "select chose no checkpoint"}}}},
        },
    }


def table_rows(text: str) -> dict[str, list[str]]:
    """measurement -> [value, status] of the GPU table in ``text``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0][:1].isdigit():
            rows[cells[1]] = cells[2:]
    return rows


def test_write_docs_fills_the_gpu_table_between_the_markers_only(gpu_check, tmp_path):
    docs = tmp_path / "benchmarks.md"
    original = (REPO / "docs" / "benchmarks.md").read_text()
    docs.write_text(original)
    (tmp_path / "gpu_check.json").write_text(json.dumps(fake_report()))

    assert gpu_check.main(["--write-docs", "--out", str(tmp_path), "--docs", str(docs)]) == 0
    text = docs.read_text()
    head, tail = original.split(gpu_check.BEGIN)[0], original.split(gpu_check.END)[1]
    assert text.startswith(head + gpu_check.BEGIN) and text.endswith(gpu_check.END + tail)
    assert "Fake GPU 80GB, torch 2.13.0+cu128" in text and "Not yet run on a GPU" not in text
    rows = table_rows(text)
    assert len(rows) == len(gpu_check.DOC_ROWS)
    assert rows["resnet8 logits, CPU vs CUDA fp32 (TF32 off): argmax agreement, max abs diff"] == ["99.90%, 2.0e-06", "ok"]
    assert rows["`ckptkd train` resnet8, bf16 + channels_last: samples/s"] == ["12346", "ok"]
    assert rows["4-checkpoint teacher, vmap vs loop, max abs diff: fp32 / bf16"] == ["2.0e-03 / 1.0e-01", "FAIL"]
    assert rows["**KD + cache / CE** (time per epoch)"] == ["**1.053**", "ok"]
    assert rows["K=2 resnet56 teacher forward, loop / vmap ms, **vmap/loop**"][0] == (
        "batch 128: 4.0 / 2.0 ms, **0.50**, batch 1024: 4.0 / 2.0 ms, **0.50**")
    assert rows["K=8 KD recompute samples/s loop / vmap"] == ["—", "ok"]  # not in the report: empty
    assert rows["`compile: true` resnet8: steps, samples/s compiled / eager (last epoch)"] == ["—", "FAIL"]
    assert rows["`torchrun --nproc_per_node 1`; SyncBatchNorm exercised"] == ["ok; False", "ok"]
    assert rows["wrn_40_2 → wrn_40_1, synthetic CIFAR-100: teacher acc; student acc per policy (chosen epochs)"] == [
        "50.00%; last [4] 40.00%, explicit: select chose no checkpoint", "partial"]

    assert gpu_check.main(["--write-docs", "--out", str(tmp_path), "--docs", str(docs)]) == 0
    assert docs.read_text() == text  # rewriting from the same JSON changes nothing


def test_write_docs_takes_only_a_full_cuda_run(gpu_check, tmp_path, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text((REPO / "docs" / "benchmarks.md").read_text())
    before = docs.read_text()
    for change in ({"device": "cpu"}, {"profile": {"name": "tiny"}}):
        (tmp_path / "gpu_check.json").write_text(json.dumps({**fake_report(), **change}))
        assert gpu_check.main(["--write-docs", "--out", str(tmp_path), "--docs", str(docs)]) == 2
    assert gpu_check.main(["--write-docs", "--json", str(tmp_path / "missing.json"), "--docs", str(docs)]) == 2
    assert "not a gpu_check.json of a full CUDA run" in capsys.readouterr().err
    assert docs.read_text() == before


def test_the_docs_hold_one_empty_gpu_table(gpu_check):
    text = (REPO / "docs" / "benchmarks.md").read_text()
    assert text.count(gpu_check.BEGIN) == 1 and text.count(gpu_check.END) == 1
    block = text.split(gpu_check.BEGIN)[1].split(gpu_check.END)[0]
    assert [row for row in table_rows(block)] == [label for _, label, _ in gpu_check.DOC_ROWS]
