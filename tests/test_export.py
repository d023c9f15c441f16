"""ckptkd export: the exported student agrees with PyTorch, and its compression is measured against its teacher."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ckptkd
from ckptkd import CkptkdError, Trajectory
from ckptkd.cli import main
from ckptkd.export import TOLERANCE, Compression, count_params, export, latency_ms
from conftest import tree_digest


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


def test_onnx_export_matches_pytorch_and_reports_the_compression(student, trained_run, digits, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "student.onnx"
    capsys.readouterr()
    assert main(["export", str(student.path), "--format", "onnx", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # an independent check: onnxruntime on the written file, on every test input
    x = digits.x_test
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - _pytorch_logits(student, x)).max() <= TOLERANCE
    reported = float(re.search(r"max \|logit difference\| (\S+) \(tolerance", text)[1])
    assert 0 <= reported <= TOLERANCE
    assert "on 256 test inputs of digits" in text
    params = count_params(ckptkd.create_model("mlp_xs", 10, (1, 8, 8)))
    rows = {line[:22].strip(): line[22:].split() for line in text.splitlines()
            if line.startswith(("student", "teacher"))}
    assert set(rows) == {"student (PyTorch)", "student (onnxruntime)", "teacher epoch 3"}
    assert rows["student (PyTorch)"][0] == f"{params:,}" == rows["teacher epoch 3"][0]  # mlp_xs taught mlp_xs
    assert float(rows["student (onnxruntime)"][1]) == pytest.approx(out.stat().st_size / 1000, abs=0.1)
    assert all(float(r[-1]) > 0 for r in rows.values())
    # the same architecture on both sides: which one measured faster is down to the CPU's noise
    assert re.search(r"^compression: 1\.0x fewer parameters, .* (faster|slower) in PyTorch", text, re.M)


def test_torchscript_export_matches_pytorch(student, digits, tmp_path):
    report = export(student.path, "torchscript", tmp_path / "student.pt")
    loaded = torch.jit.load(str(tmp_path / "student.pt"))
    with torch.no_grad():
        assert np.abs(loaded(digits.x_test).numpy() - _pytorch_logits(student, digits.x_test)).max() <= TOLERANCE
    assert report.max_diff <= TOLERANCE and report.samples == 256 and report.format.runtime == "TorchScript"


def test_the_teachers_are_found_from_another_working_directory(student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the manifest records absolute teacher paths
    report = export(student.path, "torchscript", "s.pt")
    assert [r[0] for r in report.rows][-1] == "teacher epoch 3" and report.note is None


def test_a_teacher_of_a_train_run_exports_without_a_comparison(trained_run, tmp_path):
    report = export(trained_run.checkpoints()[-1].path, "torchscript", tmp_path / "t.pt")
    assert len(report.rows) == 2 and report.note == "no teacher recorded"


BRANCHY = '''
import torch
from ckptkd import create_model


class Branchy(torch.nn.Module):
    """Doubles its logits for big batches: a forward that tracing cannot capture."""

    def __init__(self, num_classes, in_shape):
        super().__init__()
        self.net = create_model("mlp_xs", num_classes, in_shape)

    def forward(self, x):
        logits = self.net(x)
        return 2 * logits if x.shape[0] > 8 else logits


def branchy(num_classes, in_shape):
    return Branchy(num_classes, in_shape)
'''


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_that_disagrees_is_refused_and_not_written(fmt, digits, tmp_path, monkeypatch):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    (tmp_path / "branchy_net.py").write_text(BRANCHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    traj = Trajectory.create(tmp_path / "run", "branchy_net:branchy", 10, (1, 8, 8), data="digits")
    ckpt = traj.save(ckptkd.create_model("branchy_net:branchy", 10, (1, 8, 8)), 1)
    before = tree_digest(tmp_path)
    with pytest.raises(CkptkdError, match=f"the {fmt} export disagrees with the PyTorch student by up to"):
        export(ckpt.path, fmt, tmp_path / "out.bin")
    assert tree_digest(tmp_path) == before


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
