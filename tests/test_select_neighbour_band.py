"""Policy val-nll-knn: val-nll-1se's band of ties, broken by training-set agreement with the
labels of each training sample's neighbours.

Known answers come from fabricated data: two well separated clusters whose labels are partly
flipped, fabricated validation NLLs (what sets the band) and fabricated training logits.
"""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ckptkd import Checkpoint
from ckptkd.select import get_policy, top_k
from ckptkd.select.policies import neighbour_band
from ckptkd.select.policies.neighbour_band import agreement, neighbour_vote

# two clusters of 50 along a line; class = cluster; every fifth label is flipped
N = 100
TRUE = (torch.arange(N) >= 50).long()
X = (TRUE * 10.0 + torch.linspace(0, 1, N))[:, None]
FLIPPED = torch.arange(N) % 5 == 0  # every fifth sample, spread along each cluster
LABELS = torch.where(FLIPPED, 1 - TRUE, TRUE)


def _ckpts(epochs):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


class FakeCtx:
    """Training data, per-epoch training logits and per-epoch per-sample validation NLLs."""

    def __init__(self, logits, val_nll, fingerprint):
        self.data = SimpleNamespace(x_train=X, y_train=LABELS, num_classes=2, fingerprint=fingerprint)
        self.logits, self.val_nll = logits, val_nll

    def require_val(self, who):
        pass

    def train_outputs(self, c):
        return {"logits": self.logits[c.epoch], "wall_s": 0.1}

    def val_metrics(self, c):
        return {"nll_ts_samples": self.val_nll[c.epoch], "wall_s": 0.1}


def _logits(classes):
    return 3.0 * torch.nn.functional.one_hot(classes, 2).double()


def test_the_neighbours_outvote_a_flipped_label():
    # 10 of 50 flipped per cluster, k = ceil(sqrt(100)) = 10 neighbours: about 20% of any
    # neighbourhood inside a cluster is flipped, so the vote is the cluster's class
    votes = neighbour_vote(X, LABELS, 2, torch.arange(N))
    assert votes.tolist() == TRUE.tolist()
    # by hand, k = 3 on a tiny line: the lone 1 among 0s is outvoted, a sample is not its own neighbour
    x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    y = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1])
    assert neighbour_vote(x, y, 2, torch.arange(8), k=3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert neighbour_vote(x, y, 2, torch.tensor([2]), k=1).tolist() == [0]  # not its own label


def test_agreement_counts_predictions_that_match_the_vote():
    votes = {"queries": torch.tensor([0, 1, 60]), "labels": torch.tensor([0, 1, 1])}
    logits = _logits(torch.tensor([0] * 50 + [1] * 50))
    assert agreement(logits, votes).tolist() == [1.0, 0.0, 1.0]


def _flat_nll(value, n=40, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (value + noise * torch.randn(n, generator=g, dtype=torch.float64)).tolist()


def test_inside_the_band_the_teacher_that_repeats_the_flipped_labels_loses():
    # epochs 1-3: validation NLLs the split cannot tell apart (the band); epoch 1 predicts the
    # clean class on every training input, epoch 3 repeats every flipped label
    half = torch.where(FLIPPED & (torch.arange(N) % 10 == 0), LABELS, TRUE)
    logits = {1: _logits(TRUE), 2: _logits(half), 3: _logits(LABELS)}
    base = _flat_nll(0.5)
    # per-sample differences of +-0.01 that average to 0: within one SE of each other
    val = {e: [v + 0.01 * (-1) ** (j + e) for j, v in enumerate(base)] for e in (1, 2, 3)}
    ctx = FakeCtx(logits, val, fingerprint="band-memorising")
    ckpts = _ckpts([1, 2, 3])
    assert get_policy("val-nll-1se").scores(ckpts, ctx) == [0.0, 0.0, 0.0]  # all tied: it would pick the last
    scores = get_policy("val-nll-knn").scores(ckpts, ctx)
    # agreement with the vote (= the clean class here): 100%, 90% and 80% of the training samples
    agree = get_policy("val-nll-knn").agreements(ckpts, ctx)
    assert [float(a.mean()) for a in agree] == pytest.approx([1.0, 0.9, 0.8])
    assert scores[0] == 0.0 and scores[1] < 0 and scores[2] < 0
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [1]


def test_nothing_outside_the_band_is_picked_however_well_it_agrees():
    # epoch 1 agrees perfectly with the vote but its validation NLL is far worse: out of the band
    logits = {1: _logits(TRUE), 2: _logits(LABELS), 3: _logits(LABELS)}
    val = {1: _flat_nll(2.0), 2: _flat_nll(0.5), 3: _flat_nll(0.5, seed=1)}
    ctx = FakeCtx(logits, val, fingerprint="band-outside")
    ckpts = _ckpts([1, 2, 3])
    policy = get_policy("val-nll-knn")
    assert policy.band(ckpts, ctx) == [1, 2]
    scores = policy.scores(ckpts, ctx)
    assert scores[0] < -1 <= min(scores[1:])  # outside the band: below every member
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [3]  # agreement tied inside: the later one


def test_clean_labels_leave_the_pick_to_val_nll_1se():
    # clean labels: every checkpoint that fits them agrees with the vote; ties go to the later one
    logits = {1: _logits(TRUE), 2: _logits(TRUE), 3: _logits(TRUE)}
    val = {e: _flat_nll(0.3, seed=e) for e in (1, 2, 3)}
    ctx = FakeCtx(logits, val, fingerprint="band-clean")
    ctx.data.y_train = TRUE
    ckpts = _ckpts([1, 2, 3])
    mine = top_k(ckpts, get_policy("val-nll-knn").scores(ckpts, ctx), 1)
    theirs = top_k(ckpts, get_policy("val-nll-1se").scores(ckpts, ctx), 1)
    assert [c.epoch for c in mine] == [c.epoch for c in theirs]


def test_the_vote_is_computed_once_per_training_data(monkeypatch):
    calls = []
    real = neighbour_band.neighbour_vote
    monkeypatch.setattr(neighbour_band, "neighbour_vote", lambda *a, **k: calls.append(1) or real(*a, **k))
    logits = {1: _logits(TRUE), 2: _logits(LABELS), 3: _logits(LABELS)}
    ctx = FakeCtx(logits, {e: _flat_nll(0.5) for e in (1, 2, 3)}, fingerprint="band-once")
    policy = get_policy("val-nll-knn")
    policy.scores(_ckpts([1, 2, 3]), ctx)
    policy.cost_s(_ckpts([1, 2, 3]), ctx)
    assert calls == [1]


def test_the_vote_is_kept_on_disk_so_its_cost_reads_the_same_when_read_back(tmp_path, monkeypatch):
    logits = {1: _logits(TRUE), 2: _logits(LABELS), 3: _logits(LABELS)}
    first = FakeCtx(logits, {e: _flat_nll(0.5) for e in (1, 2, 3)}, fingerprint="band-disk")
    first.folder = tmp_path
    computed = neighbour_band.votes_of(first)
    assert len(list((tmp_path / neighbour_band.FOLDER_NAME).glob("*.safetensors"))) == 1
    monkeypatch.setattr(neighbour_band, "neighbour_vote", lambda *a, **k: pytest.fail("the vote was computed again"))
    again = FakeCtx(logits, first.val_nll, fingerprint="band-disk")
    again.folder = tmp_path
    read = neighbour_band.votes_of(again)
    assert read["wall_s"] == computed["wall_s"] and torch.equal(read["labels"], computed["labels"])
    policy = get_policy("val-nll-knn")
    assert policy.cost_s(_ckpts([1, 2, 3]), again) == policy.cost_s(_ckpts([1, 2, 3]), first)
