"""Policies kd-nll-1se and kd-nll-knn: the teacher judged by the validation NLL of
softmax(z / kd.temperature), the distribution the student is taught.

Fabricated validation logits: an under-confident checkpoint that temperature scaling sharpens
into the best validation NLL, against a confident one that is as accurate; at the KD
temperature the under-confident one's targets are nearly flat.
"""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ckptkd import Checkpoint
from ckptkd.select import get_policy, top_k
from ckptkd.select.temperature import fit_temperature

N, C = 200, 4
Y = torch.arange(N) % C
RIGHT = torch.arange(N) % 10 != 0  # 90% of the validation samples are predicted right


def _logits(scale: float) -> torch.Tensor:
    pred = torch.where(RIGHT, Y, (Y + 1) % C)
    return scale * F.one_hot(pred, C).double()


class FakeCtx:
    """Validation logits per epoch; val_metrics and val_nll_at computed as the context does."""

    def __init__(self, val_logits, temperature=4.0, train_logits=None, y_train=None):
        self.val_logits, self.T = val_logits, temperature
        self.train_logits = train_logits or {}
        self.data = SimpleNamespace(x_train=torch.arange(N, dtype=torch.float64)[:, None] if y_train is not None
                                    else None, y_train=y_train, num_classes=C, fingerprint=f"kd-view-{id(self)}")

    def require_val(self, who):
        pass

    def kd_temperature(self):
        return self.T

    def val_nll_at(self, c, t):
        per = F.cross_entropy(self.val_logits[c.epoch] / t, Y, reduction="none")
        return {"nll_samples": per.tolist(), "wall_s": 0.1}

    def val_metrics(self, c):
        z = self.val_logits[c.epoch]
        t, nll = fit_temperature(z, Y)
        return {"nll_ts_samples": F.cross_entropy(z / t, Y, reduction="none").tolist(), "val_nll_ts": nll,
                "wall_s": 0.1}

    def train_outputs(self, c):
        return {"logits": self.train_logits[c.epoch], "wall_s": 0.1}


def _ckpts(epochs):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


def test_at_the_kd_temperature_an_under_confident_teacher_is_not_rescued_by_its_own_temperature():
    # epoch 1: logits of scale 4, epoch 2: scale 0.5 (nearly flat), both 90% right. Each at its
    # own fitted temperature scores the same NLL, so val-nll-1se ties them and keeps the later,
    # under-confident one; at T = 4 epoch 2's targets are nearly uniform
    ctx = FakeCtx({1: _logits(4.0), 2: _logits(0.5)})
    ckpts = _ckpts([1, 2])
    at_t = [sum(ctx.val_nll_at(c, 4.0)["nll_samples"]) / N for c in ckpts]
    flat = float(torch.log(torch.tensor(float(C))))  # the NLL of a uniform distribution
    assert at_t[1] == pytest.approx(float(F.cross_entropy(_logits(0.5) / 4, Y)))
    assert flat - at_t[1] < (flat - at_t[0]) / 4  # at T = 4 epoch 2 is far closer to teaching nothing
    assert [c.epoch for c in top_k(ckpts, get_policy("val-nll-1se").scores(ckpts, ctx), 1)] == [2]
    scores = get_policy("kd-nll-1se").scores(ckpts, ctx)
    assert scores[0] == 0.0 and scores[1] < 0
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [1]


def test_kd_nll_1se_reads_the_users_temperature():
    # at T = 0.25 the sharper teacher is over-confident on its 10% of errors and loses
    ctx = FakeCtx({1: _logits(4.0), 2: _logits(0.5)}, temperature=0.25)
    scores = get_policy("kd-nll-1se").scores(_ckpts([1, 2]), ctx)
    assert scores[1] == 0.0 and scores[0] < 0


def test_kd_nll_knn_breaks_the_bands_ties_by_the_neighbours_labels():
    # equal validation logits (one band), training labels on a line in 2 blocks, every fifth flipped;
    # epoch 1 predicts the blocks' classes, epoch 2 repeats the flipped labels
    y_true = (torch.arange(N) >= N // 2).long()
    flipped = torch.arange(N) % 5 == 0
    y_train = torch.where(flipped, 1 - y_true, y_true)
    train = {1: 3.0 * F.one_hot(y_true, C).double(), 2: 3.0 * F.one_hot(y_train, C).double()}
    ctx = FakeCtx({1: _logits(4.0), 2: _logits(4.0)}, train_logits=train, y_train=y_train)
    ckpts = _ckpts([1, 2])
    policy = get_policy("kd-nll-knn")
    assert policy.band(ckpts, ctx) == [0, 1]
    assert get_policy("kd-nll-1se").scores(ckpts, ctx) == [0.0, 0.0]  # alone it would keep the last
    assert [c.epoch for c in top_k(ckpts, policy.scores(ckpts, ctx), 1)] == [1]
