"""The divergence guard: a non-finite loss stops training at once, and the last good checkpoint stays.

Epoch 3 is made to blow up by a learning-rate schedule that jumps to 1e30 times the base
rate for that epoch: the first step of epoch 3 throws the weights to infinity, so the loss
of the next step is not finite.
"""
from __future__ import annotations

import importlib
import math
import re

import pytest
import torch

from ckptkd import CkptkdError, Run, StageConfig, evaluate, load_model, train
from ckptkd.cli import main
from ckptkd.config import to_dict

train_module = importlib.import_module("ckptkd.train")  # the module; ``ckptkd.train`` is also a function
STAGE = StageConfig(model="mlp_xs", epochs=5, batch_size=64, lr=0.05, save_every=1)
BLOW_UP_EPOCH = 3


@pytest.fixture
def explodes_at_epoch_3(monkeypatch):
    real = train_module.lr_factor

    def factor(stage, step, steps_per_epoch):
        if step // steps_per_epoch + 1 == BLOW_UP_EPOCH:
            return 1e30
        return real(stage, step, steps_per_epoch)

    monkeypatch.setattr(train_module, "lr_factor", factor)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size + (n % batch_size > 1)  # as fit counts them (a last batch of one is dropped)


def _check_message(message: str, digits) -> None:
    m = re.search(r"diverged.*epoch (\d+), step (\d+).*lower the learning rate", message)
    assert m, message
    first_bad = (BLOW_UP_EPOCH - 1) * _steps_per_epoch(len(digits.x_train), STAGE.batch_size)  # 0-based step
    assert int(m.group(1)) == BLOW_UP_EPOCH
    assert first_bad <= int(m.group(2)) <= first_bad + 1, "training went on for more than one step"


def _check_last_good_checkpoint(path, digits) -> None:
    run = Run(path)
    assert not run.complete
    ckpts = run.checkpoints()
    assert [c.epoch for c in ckpts] == [1, 2]
    assert ckpts[-1].epoch == BLOW_UP_EPOCH - 1
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    model = load_model(ckpts[-1], digits.num_classes, digits.in_shape)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    result = evaluate(model, digits.x_val, digits.y_val)  # fit evaluates val every epoch, test only at the end
    assert math.isfinite(result["loss"]) and result["acc"] > 0.3
    assert result["acc"] == pytest.approx(ckpts[-1].meta["val_acc"])


def test_a_non_finite_loss_stops_training_within_one_step(tmp_path, digits, explodes_at_epoch_3):
    run = Run.create(tmp_path / "run", {"train": to_dict(STAGE)}, model=STAGE.model, num_classes=digits.num_classes,
                     in_shape=digits.in_shape, data_fingerprint=digits.fingerprint)
    with pytest.raises(CkptkdError) as raised:
        train(digits, STAGE, seed=0, run=run, progress=False)
    _check_message(str(raised.value), digits)
    _check_last_good_checkpoint(tmp_path / "run", digits)


def test_ckptkd_train_reports_divergence_in_one_line_with_exit_status_2(tmp_path, digits, explodes_at_epoch_3,
                                                                         capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--model", STAGE.model, "--epochs", str(STAGE.epochs),
                 "--batch-size", str(STAGE.batch_size), "--lr", str(STAGE.lr), "--save-every", "1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("ckptkd: error: training diverged"), err
    _check_message(err, digits)
    _check_last_good_checkpoint(out, digits)

