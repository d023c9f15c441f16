"""Algorithm 1 gives the right answer where the right answer is known.

The score and its normalisation are checked against a hand computation, the probe set
against its definition, and the whole chain (probe set -> estimates -> score -> choice)
on a trajectory built so that one checkpoint clearly knows more about the input and the
label than the others: the trained model among copies whose features are constant.
"""
import math

import pytest
import torch

from ckptkd import InfoConfig, Run
from ckptkd.info.analyze import analyze, probe_indices, score_rows
from ckptkd.select import choose, top_k


def rows(*pairs):
    return [{"epoch": i + 1, "ixf": x, "iyf": y} for i, (x, y) in enumerate(pairs)]


def test_the_score_is_the_weighted_sum_of_minmax_scaled_estimates():
    got = score_rows(rows((1.0, 0.5), (3.0, 1.5), (2.0, 2.5)), InfoConfig(weight_x=1.0, weight_y=2.0),
                     cx=math.log(100), cy=math.log(10))
    # I(X;F) spans 1..3 and I(Y;F) 0.5..2.5: scaled (0, 0), (1, .5), (.5, 1)
    assert [(r["ixf_minmax"], r["iyf_minmax"]) for r in got] == [(0.0, 0.0), (1.0, 0.5), (0.5, 1.0)]
    assert [r["score"] for r in got] == [0.0, 1.0 + 2.0 * 0.5, 0.5 + 2.0 * 1.0]
    assert [r["ixf_norm"] for r in got] == pytest.approx([1 / math.log(100), 3 / math.log(100), 2 / math.log(100)])
    assert [r["iyf_norm"] for r in got] == pytest.approx([0.5 / math.log(10), 1.5 / math.log(10), 2.5 / math.log(10)])


def test_ceiling_and_raw_scaling_score_what_they_say():
    ceiling = score_rows(rows((2.0, 1.0), (4.0, 0.5)), InfoConfig(scaling="ceiling"), cx=8.0, cy=2.0)
    assert [r["score"] for r in ceiling] == pytest.approx([2 / 8 + 1 / 2, 4 / 8 + 0.5 / 2])
    raw = score_rows(rows((2.0, 1.0), (4.0, 0.5)), InfoConfig(scaling="raw", weight_x=0.5), cx=8.0, cy=2.0)
    assert [r["score"] for r in raw] == pytest.approx([0.5 * 2 + 1, 0.5 * 4 + 0.5])


def test_equal_estimates_scale_to_zero():
    got = score_rows(rows((1.0, 2.0), (1.0, 2.0)), InfoConfig(), cx=1.0, cy=1.0)
    assert [r["score"] for r in got] == [0.0, 0.0]


def test_mi_picks_the_highest_scores(trained_run):
    ckpts = trained_run.checkpoints()  # epochs 1, 2, 3
    assert [c.epoch for c in choose("mi", ckpts, scores=[0.2, 0.9, 0.4])] == [2]
    assert [c.epoch for c in choose("mi", ckpts, scores=[0.2, 0.9, 0.4], k=2)] == [2, 3]
    assert [c.epoch for c in top_k(ckpts, [0.9, 0.1, 0.2], k=1)] == [1]
    assert [c.epoch for c in top_k(ckpts, [0.9, 0.8, 0.2], k=2, min_spacing=2)] == [1, 3]  # 2 is too near 1


def test_probe_indices_are_a_stratified_seeded_sample():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = probe_indices(y, 40, seed=3)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40 and idx.tolist() == sorted(idx.tolist())
    assert torch.bincount(y[idx]).tolist() == [20, 12, 8]  # the classes' shares of the whole
    assert torch.equal(idx, probe_indices(y, 40, seed=3))
    assert not torch.equal(idx, probe_indices(y, 40, seed=4))
    odd = probe_indices(y, 11, seed=0)  # 5.5, 3.3, 2.2: the remainder goes to the largest classes
    assert len(odd) == 11 and torch.bincount(y[odd]).tolist() == [6, 3, 2]
    assert torch.equal(probe_indices(y, 100, seed=0), torch.arange(100))
    assert torch.equal(probe_indices(y, 500, seed=0), torch.arange(100))


@pytest.fixture(scope="module")
def known_trajectory(trained_run, digits, tmp_path_factory) -> Run:
    """Four checkpoints; only epoch 3 is the trained model. The others have every weight
    zeroed, so their features are constant: no information about the input or the label."""
    trained = trained_run.checkpoints()[-1].state_dict()
    dead = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in trained.items()}
    path = tmp_path_factory.mktemp("known") / "run"
    run = Run.create(path, {"known": True}, model=trained_run.model, num_classes=digits.num_classes,
                     in_shape=digits.in_shape, data_fingerprint=digits.fingerprint)
    for epoch in (1, 2, 3, 4):
        run.save_checkpoint(trained if epoch == 3 else dead, epoch, {})
    return Run(path)


@pytest.mark.parametrize("estimator", ["kde", "binning"])
def test_algorithm1_chooses_the_checkpoint_that_knows_the_most(known_trajectory, digits, estimator):
    ckpts = known_trajectory.checkpoints()
    got = analyze(ckpts, digits, InfoConfig(estimator=estimator, probe_size=300), progress=False)
    trained = next(r for r in got if r["epoch"] == 3)
    assert all(trained["ixf"] > r["ixf"] + 0.5 and trained["iyf"] > r["iyf"] + 0.5 for r in got if r is not trained)
    assert trained["score"] == 2.0 and all(r["score"] == 0.0 for r in got if r is not trained)
    assert [c.epoch for c in choose("mi", ckpts, scores=[r["score"] for r in got])] == [3]
