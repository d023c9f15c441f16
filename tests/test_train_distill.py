"""The KD loss, ensemble teachers, the training loop and learning-rate schedules (selection: test_select.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ckptkd import (KD, CkptkdError, DataConfig, KDConfig, Run, StageConfig, Teacher, create_model, distill, fit,
                    kd_loss, load_dataset, train)
from ckptkd.teacher import combine_log_probs
from ckptkd.train import CrossEntropy, lr_factor

TINY = StageConfig(model="mlp_xs", epochs=2, batch_size=64)


def _softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------- the KD loss


def test_kd_loss_matches_a_hand_computation():
    student = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    teacher = [[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    T = 2.0
    kl_rows = []
    for s, t in zip(student, teacher):
        ps, pt = _softmax(s, T), _softmax(t, T)
        kl_rows.append(sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(3)))
    expected = T**2 * sum(kl_rows) / 2

    teacher_log_probs = F.log_softmax(torch.tensor(teacher) / T, dim=-1)
    got = kd_loss(torch.tensor(student), teacher_log_probs, T)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_zero_when_student_matches_teacher():
    logits = torch.randn(4, 5)
    assert kd_loss(logits, F.log_softmax(logits / 3, dim=-1), 3.0).item() == pytest.approx(0, abs=1e-6)


def test_kd_with_alpha_one_is_plain_cross_entropy():
    torch.manual_seed(0)
    teacher = Teacher([create_model("mlp_xs", 10, (1, 8, 8))])
    student = create_model("mlp_xs", 10, (1, 8, 8))
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    _, kd_losses = KD(teacher, KDConfig(alpha=1.0))(student, x, y, torch.arange(6), 1)
    _, ce_losses = CrossEntropy()(student, x, y, torch.arange(6), 1)
    assert sum(kd_losses.values()).item() == pytest.approx(ce_losses["ce"].item(), rel=1e-6)
    assert kd_losses["kd"].item() == 0


def test_combining_logits_averages_the_logits():
    members = [[[1.0, 0.0, 2.0]], [[3.0, 1.0, 0.0]]]  # (K=2, B=1, C=3)
    T = 2.0
    mean = [(a + b) / 2 for a, b in zip(members[0][0], members[1][0])]
    expected = [math.log(p) for p in _softmax(mean, T)]
    got = combine_log_probs(torch.tensor(members), T, "logits")
    assert got[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_combining_probs_averages_the_probabilities():
    members = [[[1.0, 0.0, 2.0]], [[3.0, 1.0, 0.0]]]
    T = 2.0
    pa, pb = _softmax(members[0][0], T), _softmax(members[1][0], T)
    expected = [math.log((a + b) / 2) for a, b in zip(pa, pb)]
    got = combine_log_probs(torch.tensor(members), T, "probs")
    assert got[0].tolist() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- teachers


def test_teacher_stays_in_eval_mode_without_gradients():
    teacher = Teacher([create_model("mlp_xs", 10, (1, 8, 8))])
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.log_probs(torch.randn(3, 1, 8, 8)).requires_grad


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_ensemble_of_one_checkpoint_twice_equals_the_checkpoint(trained_run, digits, combine):
    ckpt = trained_run.checkpoints()[-1]
    one = Teacher.from_checkpoints([ckpt], digits.num_classes, digits.in_shape, combine)
    two = Teacher.from_checkpoints([ckpt, ckpt], digits.num_classes, digits.in_shape, combine)
    x = digits.x_test[:16]
    assert torch.allclose(one.log_probs(x, 4.0), two.log_probs(x, 4.0), atol=1e-6)


def test_teacher_needs_a_member():
    with pytest.raises(CkptkdError, match="at least one"):
        Teacher([])


# ---------------------------------------------------------------- training


def test_training_is_deterministic_for_a_seed(digits):
    a, _ = train(digits, TINY, seed=0, progress=False)
    b, _ = train(digits, TINY, seed=0, progress=False)
    c, _ = train(digits, TINY, seed=1, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_fit_saves_every_n_epochs_and_at_the_end(digits, tmp_path):
    stage = StageConfig(model="mlp_xs", epochs=5, batch_size=64, save_every=2)
    run = Run.create(tmp_path / "run", {}, model="mlp_xs", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint)
    model = create_model("mlp_xs", 10, digits.in_shape)
    record = fit(model, CrossEntropy(), digits, stage, seed=0, run=run, progress=False)
    assert [c.epoch for c in run.checkpoints()] == [2, 4, 5]
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    assert run.checkpoints()[-1].meta["test_acc"] == record["test_acc"]


def test_fit_evaluates_val_every_epoch_and_test_only_at_the_end(digits, tmp_path):
    stage = StageConfig(model="mlp_xs", epochs=3, batch_size=64, save_every=1)
    run = Run.create(tmp_path / "run", {}, model="mlp_xs", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint)
    record = fit(create_model("mlp_xs", 10, digits.in_shape), CrossEntropy(), digits, stage, seed=0, run=run,
                 progress=False)
    metrics = run.metrics()
    assert all(0 <= m["val_acc"] <= 1 and math.isfinite(m["val_loss"]) for m in metrics)
    assert ["test_acc" in m for m in metrics] == [False, False, True]
    assert ["test_acc" in c.meta for c in run.checkpoints()] == [False, False, True]
    assert record["test_acc"] == metrics[-1]["test_acc"] and record["val_acc"] == run.checkpoints()[-1].meta["val_acc"]


def test_fit_without_a_validation_split_records_no_val_keys(tmp_path):
    data = load_dataset(DataConfig(spec="digits", val_fraction=0))
    record = fit(create_model("mlp_xs", 10, data.in_shape), CrossEntropy(), data,
                 StageConfig(model="mlp_xs", epochs=1, batch_size=64), seed=0, progress=False)
    assert "val_acc" not in record and "val_loss" not in record and 0 <= record["test_acc"] <= 1


def test_train_marks_the_run_complete(trained_run):
    assert trained_run.complete
    assert [c.epoch for c in trained_run.checkpoints()] == [1, 2, 3]
    assert trained_run.manifest["final"]["epoch"] == 3


def test_huge_learning_rate_stops_with_a_divergence_error(digits):
    with pytest.raises(CkptkdError, match=r"diverged.*lower the learning rate"):
        train(digits, StageConfig(model="mlp_xs", epochs=2, batch_size=64, lr=1e6), progress=False)


def test_distill_from_one_checkpoint(trained_run, digits):
    teacher = Teacher.from_checkpoints(trained_run.checkpoints()[-1:], digits.num_classes, digits.in_shape)
    student, record = distill(digits, TINY, teacher, KDConfig(), seed=0, progress=False)
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_acc"] <= 1
    assert record["epoch"] == TINY.epochs


def test_distill_from_a_snapshot_ensemble(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()[1:]
    teacher = Teacher.from_checkpoints(ckpts, digits.num_classes, digits.in_shape, combine="probs")
    run = Run.create(tmp_path / "student", {}, model="mlp_xs", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint, kind="distill")
    _, record = distill(digits, TINY, teacher, KDConfig(temperature=2.0), seed=0, run=run, progress=False)
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["test_loss"])
    assert Run(run.path).complete


# ---------------------------------------------------------------- learning-rate schedules


def test_cosine_schedule_by_hand():
    stage = StageConfig(epochs=4, schedule="cosine")
    assert lr_factor(stage, 0, 10) == pytest.approx(1.0)
    assert lr_factor(stage, 10, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(stage, 20, 10) == pytest.approx(0.5)
    assert lr_factor(stage, 40, 10) == pytest.approx(0.0, abs=1e-12)


def test_multistep_schedule_by_hand():
    stage = StageConfig(epochs=4, schedule="multistep", milestones=[2, 3], gamma=0.1)
    factors = [lr_factor(stage, step, 10) for step in (0, 19, 20, 29, 30, 39)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
