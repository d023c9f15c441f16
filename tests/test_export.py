"""ckptkd export: every format's file agrees with PyTorch at every batch size, a model a format cannot
capture is refused, a killed export leaves nothing, and the compression is measured against the teacher."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ckptkd
from ckptkd import CkptkdError
from ckptkd.cli import main
from ckptkd.export import TOLERANCE, Compression, count_params, export, latency_ms
from conftest import tree_digest
from unexportable_models import checkpoint_of


@pytest.fixture(scope="module")
def student(tmp_path_factory, trained_run):
    """A student distilled by ``ckptkd distill`` from the shared run's last checkpoint."""
    out = tmp_path_factory.mktemp("export") / "student"
    teacher = str(trained_run.checkpoints()[-1].path)
    assert main(["distill", "--teacher", teacher, "--data", "digits", "--model", "mlp_xs", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    return ckptkd.Run(out).checkpoints()[-1]


def _pytorch_logits(ckpt, x):
    model = ckptkd.load_model(ckpt, 10, (1, 8, 8))
    with torch.no_grad():
        return model(x).numpy()


def _run_exported(fmt: str, path: Path):
    """The exported file, run by its own runtime, independently of ckptkd's loaders."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[0] == session.get_outputs()[0].shape[0] == "batch"
        return lambda x: session.run(None, {"input": x.numpy()})[0]
    if fmt == "pt2":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x).detach().numpy()
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # the legacy format: torch says so
        module = torch.jit.load(str(path))
    return lambda x: module(x).detach().numpy()


def test_onnx_export_matches_pytorch_and_reports_the_compression(student, trained_run, digits, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "student.onnx"
    capsys.readouterr()
    assert main(["export", str(student.path), "--format", "onnx", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert captured.err == ""  # no warning: onnx is a current format, and torch's exporter noise is kept out
    # an independent check: onnxruntime on the written file, on every test input
    x = digits.x_test
    assert np.abs(_run_exported("onnx", out)(x) - _pytorch_logits(student, x)).max() <= TOLERANCE
    reported = float(re.search(r"max \|logit difference\| (\S+) \(tolerance", text)[1])
    assert 0 <= reported <= TOLERANCE
    assert "on 256 test inputs of digits (batch sizes 256, 7 and 1)" in text
    params = count_params(ckptkd.create_model("mlp_xs", 10, (1, 8, 8)))
    rows = {line[:22].strip(): line[22:].split() for line in text.splitlines()
            if line.startswith(("student", "teacher"))}
    assert set(rows) == {"student (PyTorch)", "student (onnxruntime)", "teacher epoch 3"}
    assert rows["student (PyTorch)"][0] == f"{params:,}" == rows["teacher epoch 3"][0]  # mlp_xs taught mlp_xs
    assert float(rows["student (onnxruntime)"][1]) == pytest.approx(out.stat().st_size / 1000, abs=0.1)
    assert all(float(r[-1]) > 0 for r in rows.values())
    # the same architecture on both sides: which one measured faster is down to the CPU's noise
    assert re.search(r"^compression: 1\.0x fewer parameters, .* (faster|slower) in PyTorch", text, re.M)


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_every_format_agrees_with_pytorch_at_every_batch_size(fmt, student, digits, tmp_path, monkeypatch):
    monkeypatch.setattr("ckptkd.errors._WARNED", set())
    report = export(student.path, fmt, tmp_path / f"student.{fmt}")
    assert report.max_diff <= TOLERANCE and report.samples == 256 and report.batches == [256, 7, 1]
    run = _run_exported(fmt, tmp_path / f"student.{fmt}")
    for n in (1, 5, len(digits.x_test)):  # one file, any batch size: the batch dimension is dynamic
        x = digits.x_test[:n]
        assert run(x).shape == (n, 10)
        assert np.abs(run(x) - _pytorch_logits(student, x)).max() <= TOLERANCE


def test_torchscript_is_legacy_and_says_so_in_one_line(student, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ckptkd.errors._WARNED", set())
    capsys.readouterr()
    assert main(["export", str(student.path), "--format", "torchscript", "--out", str(tmp_path / "s.pt")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["ckptkd: warning: torchscript is a legacy format: PyTorch deprecates torch.jit; use --format pt2 "
                   "(torch.export) or onnx, unless the forward branches on its input"]
    for fmt in ("onnx", "pt2"):
        assert export(student.path, fmt, tmp_path / f"s.{fmt}").format.legacy is None


def test_onnx_without_onnxscript_says_which_extra(student, tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def without_onnxscript(name, *a, **k):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", without_onnxscript)
    with pytest.raises(CkptkdError, match=r"^ONNX export needs the packages onnx, onnxscript and onnxruntime "
                                          r"\(onnxscript is missing\); pip install 'ckptkd\[export\]'$"):
        export(student.path, "onnx", tmp_path / "s.onnx")
    assert not (tmp_path / "s.onnx").exists()


def test_the_teachers_are_found_from_another_working_directory(student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the manifest records absolute teacher paths
    report = export(student.path, "pt2", "s.pt2")
    assert [r[0] for r in report.rows][-1] == "teacher epoch 3" and report.note is None


def test_a_teacher_of_a_train_run_exports_without_a_comparison(trained_run, tmp_path):
    report = export(trained_run.checkpoints()[-1].path, "pt2", tmp_path / "t.pt2")
    assert len(report.rows) == 2 and report.note == "no teacher recorded"


# ---------------------------------------------------------------- what cannot be exported


def _cli(argv, cwd, env=None):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    return subprocess.run([sys.executable, "-m", "ckptkd", *argv], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_data_dependent_forward_is_refused_naming_the_format_that_works(fmt, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    ckpt = checkpoint_of(tmp_path / "run", "unexportable_models:value_branch")
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert main(["export", str(ckpt.path), "--format", fmt, "--out", str(tmp_path / "out.bin")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ckptkd: error: model 'unexportable_models:value_branch' cannot be exported as {fmt}: its forward branches "
        "on its input's values (torch.export: data-dependent control flow); --format torchscript would work "
        "(legacy, but it keeps the branch)"]
    assert tree_digest(tmp_path) == before  # no partial file


def test_the_format_named_does_work(digits, tmp_path):
    """torch.jit.script keeps the branch: right on batches on both sides of it (a trace of the
    example batch would be wrong on the bigger ones)."""
    ckpt = checkpoint_of(tmp_path / "run", "unexportable_models:value_branch")
    report = export(ckpt.path, "torchscript", tmp_path / "s.pt")
    run = _run_exported("torchscript", tmp_path / "s.pt")
    model = ckptkd.load_model(ckpt, 10, (1, 8, 8))
    for x in (digits.x_test[:2], digits.x_test[1:8], digits.x_test):  # sums 37, 134 and 5001: both branches
        with torch.no_grad():
            assert np.abs(run(x) - model(x).numpy()).max() <= TOLERANCE
    assert report.max_diff <= TOLERANCE


def test_when_no_format_captures_the_forward_every_one_is_refused(tmp_path):
    ckpt = checkpoint_of(tmp_path / "run", "unexportable_models:batch_branch_unscriptable")
    before = tree_digest(tmp_path)
    with pytest.raises(CkptkdError, match=r"^model 'unexportable_models:batch_branch_unscriptable' cannot be "
                       r"exported as pt2: its forward depends on the batch size, which the export keeps dynamic "
                       r"\(torch.export: constraints violated\); no format ckptkd writes captures it; write the "
                       r"branch with torch.cond, which torch.export keeps$"):
        export(ckpt.path, "pt2", tmp_path / "out.pt2")
    # torch.jit.script rejects its *rest; the trace keeps the small batch's branch, and the check sees it
    with pytest.raises(CkptkdError, match="^the torchscript export disagrees with the PyTorch student by up to "
                                          r"\S+ \(tolerance 0.0001\) on 256 test inputs, so it was not written$"):
        export(ckpt.path, "torchscript", tmp_path / "out.pt")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_an_export_that_disagrees_is_refused_and_not_written(fmt, student, tmp_path, monkeypatch):
    """A file whose runtime gives other logits than PyTorch (here: a loader that perturbs them)."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    import dataclasses

    from ckptkd.export import formats

    real = formats.FORMATS[fmt]
    monkeypatch.setitem(formats.FORMATS, fmt, dataclasses.replace(
        real, load=lambda blob: (lambda run: lambda x: run(x) + 1e-3 * (len(x) == 7))(real.load(blob))))
    before = tree_digest(tmp_path)
    with pytest.raises(CkptkdError, match=f"^the {fmt} export disagrees with the PyTorch student by up to 0.001 "):
        export(student.path, fmt, tmp_path / "out.bin")  # only the batch of 7 is off: every batch size is checked
    assert tree_digest(tmp_path) == before


# ---------------------------------------------------------------- a kill leaves no partial file


def test_a_killed_export_leaves_no_partial_file(student, tmp_path):
    out = tmp_path / "s.pt2"
    argv = ["export", str(student.path), "--format", "pt2", "--out", str(out)]
    fault = {"CKPTKD_FAULT": "mid-export:1"}  # SIGKILL with the file's bytes written and synced, not yet named
    for overwrite in (False, True):  # a new file; a file that an earlier export left
        if overwrite:
            out.write_bytes(b"the previous export")
        before = tree_digest(tmp_path)
        killed = _cli(argv + ["--overwrite"] * overwrite, tmp_path, fault)
        assert killed.returncode == -9, killed.stderr
        assert tree_digest(tmp_path) == before  # nothing new, not even a temporary file; the old file intact
    done = _cli(argv + ["--overwrite"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(tree_digest(tmp_path)) == {"s.pt2"} and torch.export.load(str(out)) is not None


def test_without_unnamed_files_the_export_is_still_atomic(student, tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE")  # not Linux: ckptkd.io.atomic_write's rename
    export(student.path, "pt2", tmp_path / "s.pt2")
    assert set(tree_digest(tmp_path)) == {"s.pt2"} and torch.export.load(str(tmp_path / "s.pt2")) is not None


def test_latency_is_measured_side_by_side():
    small = torch.nn.Linear(8, 2)
    big = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(50)])
    ms = latency_ms({"small": small, "big": big}, torch.randn(1, 8), rounds=3)
    assert set(ms) == {"small", "big"} and all(v > 0 for v in ms.values())
    assert count_params(big) == 50 * 72 and count_params(small) == 18


def test_compression_line_without_a_teacher():
    line = Compression("mlp_xs", None, 100, None, 0.5, None, threads=1).line()
    assert line == "compression: student mlp_xs 100 parameters, 0.500 ms per sample on CPU; no teacher recorded"
    line = Compression("mlp_xs", "mlp_l", 100, 1000, 0.5, 2.0, threads=2).line()
    assert "(10.0x fewer)" in line and "(4.0x faster), batch 1, 2 threads" in line


def test_a_student_that_measured_slower_is_called_slower():
    from ckptkd.export import speed

    assert speed(4.0, 1.0) == "4.0x faster" and speed(0.25, 0.5) == "2.0x slower"  # timings on a busy CPU
