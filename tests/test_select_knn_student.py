"""Policy knn-student: a k-NN student of the teacher's softened training outputs, scored on validation.

Known answers come from hand-made inputs and logits, where the neighbours, the student's
predictions and the scores are computed by hand; the last tests run it on ``trained_run``
(mlp_xs on digits, 3 checkpoints) and through ``ckptkd select``.
"""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ckptkd import Checkpoint, CkptkdError, DataConfig, load_dataset
from ckptkd.config import KDConfig
from ckptkd.select import POLICIES, SelectionContext, choose, get_policy, policy_scores
from ckptkd.select.policies.knn_student import default_k, feature_scaling, nearest_training_inputs, neighbours


class HandMadeCtx:
    """What knn-student reads: the train and val splits, each checkpoint's training logits, kd."""

    def __init__(self, x_train, y_train, x_val, y_val, logits_by_epoch, kd=None):
        self.data = SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, fingerprint="hand")
        self.logits, self.kd, self.device = logits_by_epoch, kd, "cpu"

    def require_val(self, who):
        SelectionContext.require_val(self, who)

    def train_outputs(self, c):
        return {"logits": self.logits[c.epoch], "wall_s": 0.25}


def _ckpts(epochs):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


def test_k_is_the_ceiling_of_the_square_root_capped_at_n():
    assert [default_k(n) for n in (1, 2, 4, 9, 10, 45000)] == [1, 2, 2, 3, 4, 213]


# ---------------------------------------------------------------- a known answer by hand

# 9 training inputs on a line in three clusters of 3, so k = 3 and each validation input's
# neighbours are its cluster; 2 classes.
X_TRAIN = torch.tensor([0.0, 1, 2, 10, 11, 12, 20, 21, 22])[:, None]
Y_TRAIN = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 0])
X_VAL = torch.tensor([1.2, 11.0, 20.9])[:, None]
Y_VAL = torch.tensor([0, 1, 0])
# epoch 1: on the first cluster one confident vote for class 0 against two mild ones for 1;
# epoch 2: class 1 everywhere, sure
TEACHER = torch.tensor([[6.0, 0], [0, 2], [0, 2], [0, 3], [0, 3], [0, 3], [3, 0], [3, 0], [3, 0]])
LATE = torch.tensor([[0.0, 3]] * 9)


def _p0(a, b, t):  # class 0's softmax of logits (a, b) at temperature t
    return 1 / (1 + math.exp((b - a) / t))


def test_the_neighbours_are_the_clusters_nearest_first():
    index = nearest_training_inputs(X_TRAIN, X_VAL, 3)
    assert index.tolist() == [[1, 2, 0], [4, 3, 5], [7, 6, 8]]


def test_the_student_averages_the_softened_targets_of_the_neighbours_and_is_scored_by_accuracy():
    ckpts, policy = _ckpts([1, 2]), get_policy("knn-student")
    ctx = HandMadeCtx(X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, {1: TEACHER, 2: LATE})  # no kd: T = 4
    index = neighbours(ctx)["index"]
    assert neighbours(ctx)["k"] == 3
    q = policy.predictions(TEACHER, index, 4.0)
    first = (_p0(6, 0, 4) + 2 * _p0(0, 2, 4)) / 3  # = (0.818 + 2 * 0.378) / 3 = 0.524: class 0
    assert q[:, 0].tolist() == pytest.approx([first, _p0(0, 3, 4), _p0(3, 0, 4)])
    right = policy.correctness(ckpts, ctx)
    assert [r.tolist() for r in right] == [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
    # one-SE rule by hand: d = (1, 0, 1), mean 2/3, std sqrt(1/3), SE = 1/3, so epoch 2 scores -(2/3 - 1/3)
    assert policy.scores(ckpts, ctx) == pytest.approx([0.0, -1 / 3])
    assert [c.epoch for c in choose("knn-student", ckpts, ctx)] == [1]
    assert policy.cost_s(ckpts, ctx) == pytest.approx(2 * 0.25 + neighbours(ctx)["wall_s"])


def test_the_kd_temperature_is_the_one_the_targets_are_softened_with():
    # at T = 1 the confident vote saturates: (0.998 + 2 * 0.119) / 3 = 0.412, so the first cluster says class 1
    ckpts, policy = _ckpts([1, 2]), get_policy("knn-student")
    ctx = HandMadeCtx(X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, {1: TEACHER, 2: LATE}, kd=KDConfig(temperature=1.0))
    first = (_p0(6, 0, 1) + 2 * _p0(0, 2, 1)) / 3
    assert first < 0.5
    assert [r.tolist() for r in policy.correctness(ckpts, ctx)] == [[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
    # d = (0, 0, 1): mean 1/3, SE 1/3, a tie, and ties go to the later checkpoint
    assert policy.scores(ckpts, ctx) == pytest.approx([0.0, 0.0])
    assert [c.epoch for c in choose("knn-student", ckpts, ctx)] == [2]


def test_features_are_standardised_on_the_training_split_and_a_constant_one_is_zero():
    # feature 1 is constant on the training split: whatever a validation input has there is ignored
    x_train = torch.tensor([[0.0, 5], [1, 5], [2, 5], [3, 5]])
    mean, inv = feature_scaling(x_train)
    assert mean.tolist() == pytest.approx([1.5, 5.0]) and inv.tolist() == pytest.approx([1 / math.sqrt(1.25), 0.0])
    assert nearest_training_inputs(x_train, torch.tensor([[0.9, 1000.0]]), 2).tolist() == [[1, 0]]
    # a feature on a scale 1000 times larger does not decide the distances alone
    x_train = torch.tensor([[0.0, 0], [1, 0], [0, 1000], [1, 1000]])
    assert nearest_training_inputs(x_train, torch.tensor([[0.9, 400.0]]), 1).tolist() == [[1]]


def test_streaming_the_training_rows_gives_the_neighbours_of_one_pass(monkeypatch):
    from ckptkd.select.policies import knn_student

    g = torch.Generator().manual_seed(0)
    x_train, x_val = torch.randn(300, 2, 3, generator=g), torch.randn(40, 2, 3, generator=g)
    whole = nearest_training_inputs(x_train, x_val, 17)
    monkeypatch.setattr(knn_student, "CHUNK_ELEMENTS", 40 * 20)  # 20 training rows at a time
    assert torch.equal(nearest_training_inputs(x_train, x_val, 17), whole)
    z = (x_train.reshape(300, -1) - x_train.reshape(300, -1).mean(0)) / x_train.reshape(300, -1).std(0, correction=0)
    v = (x_val.reshape(40, -1) - x_train.reshape(300, -1).mean(0)) / x_train.reshape(300, -1).std(0, correction=0)
    assert torch.equal(whole, torch.cdist(v.double(), z.double()).topk(17, largest=False).indices)


# ---------------------------------------------------------------- a teacher that repeats flipped labels


def _clustered(clump: bool):
    """2-D, 2 classes, 100 training inputs (k = 10): class 0 around (0, 0) (30) and (0, 4) (20),
    class 1 around (6, 0) (50). Training labels of class 0 are flipped to 1: the whole (0, 4)
    group (20) with ``clump``, else every fifth class-0 input (10, scattered). The 30
    validation inputs, 10 per group, are labelled correctly."""
    g = torch.Generator().manual_seed(1)

    def group(centre, n):
        return torch.tensor(centre) + 0.3 * torch.randn(n, 2, generator=g)

    x_train = torch.cat([group([0.0, 0.0], 30), group([0.0, 4.0], 20), group([6.0, 0.0], 50)])
    true = torch.tensor([0] * 50 + [1] * 50)
    flipped = torch.arange(30, 50) if clump else torch.arange(0, 50, 5)
    labels = true.clone()
    labels[flipped] = 1
    x_val = torch.cat([group([0.0, 0.0], 10), group([0.0, 4.0], 10), group([6.0, 0.0], 10)])
    y_val = torch.tensor([0] * 20 + [1] * 10)
    onehot = lambda y: 5.0 * torch.nn.functional.one_hot(y, 2).float()  # noqa: E731
    # epoch 5 predicts the true classes on its training inputs; epoch 10 repeats every flipped label
    return HandMadeCtx(x_train, labels, x_val, y_val, {5: onehot(true), 10: onehot(labels)})


def test_a_teacher_that_repeats_a_clump_of_flipped_labels_loses_to_the_one_that_does_not():
    ctx, ckpts = _clustered(clump=True), _ckpts([5, 10])
    right = get_policy("knn-student").correctness(ckpts, ctx)
    assert [float(r.mean()) for r in right] == pytest.approx([1.0, 2 / 3])  # the memoriser misses the clump
    assert [c.epoch for c in choose("knn-student", ckpts, ctx)] == [5]
    evidence = get_policy("knn-student").evidence(ckpts, ctx)
    assert evidence.scale == 100.0 and "kNN-student validation accuracy" in evidence.unit


def test_scattered_flipped_labels_are_washed_out_the_known_weakness():
    # 10 flips scattered among 50: a few of any 10 neighbours at most, so the student's argmax
    # is the same for both teachers, they tie, and the tie goes to the later (memorising) one
    ctx, ckpts = _clustered(clump=False), _ckpts([5, 10])
    right = get_policy("knn-student").correctness(ckpts, ctx)
    assert torch.equal(right[0], right[1])
    assert [c.epoch for c in choose("knn-student", ckpts, ctx)] == [10]


# ---------------------------------------------------------------- refusals, registry, real runs


def test_it_refuses_without_a_validation_split():
    no_val = load_dataset(DataConfig(spec="digits", val_fraction=0))
    with pytest.raises(CkptkdError, match="policy knn-student needs a validation split; set data.val_fraction > 0"):
        choose("knn-student", _ckpts([1, 2, 3]), SelectionContext(no_val))


def test_the_registry_lists_it(capsys):
    from ckptkd.cli import main

    assert "knn-student" in POLICIES and POLICIES["knn-student"].needs == ("train", "val")
    assert main(["policies"]) == 0
    assert "knn-student" in capsys.readouterr().out


def test_on_a_real_trajectory_it_costs_the_training_pass_and_one_query(trained_run, digits):
    ckpts = trained_run.checkpoints()
    ctx = SelectionContext(digits)
    scores = policy_scores("knn-student", ckpts, ctx)
    assert len(scores) == 3 and all(math.isfinite(s) and s <= 0 for s in scores) and max(scores) == 0.0
    assert neighbours(ctx)["index"].shape == (len(digits.y_val), default_k(len(digits.y_train)))
    passes = sum(ctx.train_outputs(c)["wall_s"] for c in ckpts)
    assert get_policy("knn-student").cost_s(ckpts, ctx) == pytest.approx(passes + neighbours(ctx)["wall_s"])


def test_the_neighbours_are_cached_with_their_cost_and_read_back(trained_run, digits, tmp_path):
    from ckptkd.select.policies.knn_student import FOLDER_NAME

    ckpts = trained_run.checkpoints()
    first = SelectionContext(digits, folder=tmp_path)
    scores, cost = policy_scores("knn-student", ckpts, first), get_policy("knn-student").cost_s(ckpts, first)
    files = list((tmp_path / FOLDER_NAME).glob("*.safetensors"))
    assert len(files) == 1
    again = SelectionContext(digits, folder=tmp_path)  # a new context reads the record back: same cost
    before = files[0].read_bytes()
    assert policy_scores("knn-student", ckpts, again) == scores
    assert get_policy("knn-student").cost_s(ckpts, again) == cost and files[0].read_bytes() == before
    assert torch.equal(neighbours(again)["index"], neighbours(first)["index"])
    files[0].write_bytes(b"not a safetensors file")  # damaged: only a lost speed-up
    damaged = SelectionContext(digits, folder=tmp_path)
    assert torch.equal(neighbours(damaged)["index"], neighbours(first)["index"])


def test_select_command_reports_it_with_a_confidence_statement(run_copy, capsys):
    from ckptkd.cli import main

    assert main(["select", str(run_copy.path), "--policy", "knn-student", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parts"][0]["distillations"] == 0.0 and len(out["ranking"]) == 3
    assert out["confidence"]["picks"][0]["epoch"] == out["chosen"][0]["epoch"]
