"""``Run.log`` also writes TensorBoard events when tensorboard (the optional extra) is installed.

The test that reads the events back skips without tensorboard; the others check that its
absence, ``CKPTKD_TENSORBOARD=0`` and a broken writer never disturb metrics.jsonl.
"""
from __future__ import annotations

import importlib
import sys

import pytest

from ckptkd import Run

run_module = importlib.import_module("ckptkd.trajectory.run")

RECORDS = [{"epoch": 1, "step": 10, "lr": 0.1, "train_loss": 2.0, "test_acc": 0.5, "note": "text", "ok": True},
           {"epoch": 2, "step": 20, "lr": 0.05, "train_loss": 1.5, "test_acc": 0.7, "note": "text", "ok": True}]


def _run(path) -> Run:
    return Run.create(path, {"x": 1}, model="mlp_xs", num_classes=10, in_shape=(1, 8, 8), data_fingerprint="")


def _log_all(run: Run) -> None:
    for r in RECORDS:
        run.log(r)
    run.mark("complete")


def test_events_hold_every_number_of_each_record(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(tmp_path / "run")
    _log_all(run)
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["lr", "step", "test_acc", "train_loss"]  # no text, no bools, no epoch
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("train_loss")] == [(1, 2.0), (2, 1.5)]
    assert [e.step for e in acc.Scalars("test_acc")] == [1, 2]
    assert len(run.metrics()) == 2


def test_without_tensorboard_only_metrics_jsonl_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    monkeypatch.setattr(run_module, "_TB_MISSING", False)
    run = _run(tmp_path / "run")
    _log_all(run)
    assert not (run.path / "tensorboard").exists()
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    assert run_module._TB_MISSING  # the failed import is not retried for every run


def test_ckptkd_tensorboard_0_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CKPTKD_TENSORBOARD", "0")
    run = _run(tmp_path / "run")
    _log_all(run)
    assert not (run.path / "tensorboard").exists()
    assert len(run.metrics()) == 2


def test_a_broken_writer_is_dropped_and_the_log_goes_on(tmp_path, monkeypatch):
    calls = []

    class Broken:
        def add_scalar(self, *args, **kwargs):
            calls.append(args)
            raise RuntimeError("disk trouble inside the writer")

    monkeypatch.setattr(run_module, "_open_tensorboard", lambda folder: Broken())
    run = _run(tmp_path / "run")
    _log_all(run)
    assert len(calls) == 1  # tried once, then dropped
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
