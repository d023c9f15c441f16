"""The training-set selection input and the policies that read it: aum-fit, label-wave.

Known answers come from fabricated training logits, where the right pick is computed by
hand; the cache tests use ``trained_run`` (mlp_xs on digits, 3 checkpoints).
"""
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ckptkd import Checkpoint, CkptkdError, DataConfig, load_dataset
from ckptkd.select import POLICIES, SelectionContext, choose, get_policy, policy_scores, top_k
from ckptkd.select.policies.churn import churn_rates, onset_index
from ckptkd.select.policies.memorisation import early_checkpoints, suspect_labels
from ckptkd.select.trainset import FOLDER_NAME, one_se_scores

# ---------------------------------------------------------------- fabricated trajectories


class FakeCtx:
    """What the training-set policies read: the training labels and each checkpoint's logits."""

    def __init__(self, y, logits_by_epoch):
        self.data = SimpleNamespace(y_train=y)
        self.logits = logits_by_epoch

    def train_outputs(self, c):
        return {"logits": self.logits[c.epoch], "wall_s": 0.5}


def _ckpts(epochs):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


def _onehot(classes, scale, k=3):
    return scale * torch.nn.functional.one_hot(torch.as_tensor(classes), k).double()


N, NOISY = 100, 20  # 3 classes; the first 20 training labels are flipped to the next class
TRUE = torch.arange(N) % 3
LABELS = torch.where(torch.arange(N) < NOISY, (TRUE + 1) % 3, TRUE)


def _memorising_trajectory():
    """Epochs 1-2 predict the true class (unsure, then sure), epoch 3 starts predicting the
    flipped labels of the noisy samples, epoch 4 fits every label with confidence."""
    half = torch.where(torch.arange(N) < NOISY // 2, LABELS, TRUE)  # epoch 3: half the noisy ones memorised
    return {1: _onehot(TRUE, 2.0), 2: _onehot(TRUE, 4.0), 3: _onehot(half, 4.0), 4: _onehot(LABELS, 6.0)}


def test_aum_flags_exactly_the_labels_the_early_trajectory_disagrees_with():
    ckpts = _ckpts([1, 2, 3, 4])
    assert [c.epoch for c in early_checkpoints(ckpts)] == [1, 2]  # the first half of training
    flagged = suspect_labels(ckpts, FakeCtx(LABELS, _memorising_trajectory()))
    assert flagged.tolist() == (torch.arange(N) < NOISY).tolist()


def test_aum_fit_picks_the_teacher_before_it_memorises_the_flagged_labels():
    ckpts = _ckpts([1, 2, 3, 4])
    ctx = FakeCtx(LABELS, _memorising_trajectory())
    # credits by hand: p(label) on the 80 trusted samples, 1 - p(label) on the 20 flagged ones
    p = lambda s: math.exp(s) / (math.exp(s) + 2)  # noqa: E731  the top class's softmax of s * onehot
    q = lambda s: 1 / (math.exp(s) + 2)  # noqa: E731  any other class's
    mean = {1: (80 * p(2) + 20 * (1 - q(2))) / N, 2: (80 * p(4) + 20 * (1 - q(4))) / N,
            3: (80 * p(4) + 10 * (1 - p(4)) + 10 * (1 - q(4))) / N, 4: (80 * p(6) + 20 * (1 - p(6))) / N}
    credits = get_policy("aum-fit").credits(ckpts, ctx)
    assert [float(c.mean()) for c in credits] == pytest.approx([mean[e] for e in (1, 2, 3, 4)])
    scores = get_policy("aum-fit").scores(ckpts, ctx)
    assert scores[1] == 0.0 and all(s < 0 for i, s in enumerate(scores) if i != 1)  # epoch 2 is clearly best
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [2]
    # with every label trusted, the same outputs would reward memorising: epoch 4 fits the labels best
    from ckptkd.select.trainset import label_probability

    fit = [float(label_probability(ctx.logits[e], LABELS).mean()) for e in (1, 2, 3, 4)]
    assert max(range(4), key=lambda i: fit[i]) == 3


def test_aum_fit_on_clean_labels_flags_nothing_and_keeps_the_last():
    ckpts = _ckpts([1, 2, 3, 4])
    clean = {1: _onehot(TRUE, 1.0), 2: _onehot(TRUE, 2.0), 3: _onehot(TRUE, 3.0), 4: _onehot(TRUE, 4.0)}
    ctx = FakeCtx(TRUE, clean)
    assert not suspect_labels(ckpts, ctx).any()
    assert [c.epoch for c in choose("aum-fit", ckpts, ctx)] == [4]


def test_one_se_scores_tie_what_the_samples_cannot_tell_apart():
    a = torch.tensor([1.0, 0.0] * 50)
    b = torch.tensor([0.0, 1.0] * 50) + 0.01  # ahead by 0.01, with a paired SE of 0.1: a tie
    assert one_se_scores([b, a]) == [0.0, 0.0]
    c = torch.full((100,), 0.5)
    assert one_se_scores([c + 0.2, c]) == pytest.approx([0.0, -0.2])  # no spread: a real difference


# ---------------------------------------------------------------- cl-fit: confident learning's flags


def _hard_and_noisy():
    """120 samples of 3 classes: 20 flipped labels that the early trajectory confidently puts in
    their true class, 20 hard clean samples whose early probabilities are spread out (their
    label second at 0.3, another class first at 0.4), 80 easy clean ones. Epoch 4 memorises the
    flipped labels; epoch 3 instead learns the hard samples and keeps the flipped ones right."""
    n = 120
    true = torch.arange(n) % 3
    noisy, hard = torch.arange(n) < 20, (torch.arange(n) >= 20) & (torch.arange(n) < 40)
    labels = torch.where(noisy, (true + 1) % 3, true)

    def probs(top, p_top):  # p_top on class ``top``, the rest split evenly
        out = torch.full((n, 3), 0.0, dtype=torch.float64)
        out[:] = ((1 - p_top) / 2)[:, None]
        out[torch.arange(n), top] = p_top.double()
        return out

    early = probs(true, torch.full((n,), 0.9))
    spread = torch.tensor([0.3, 0.4, 0.3], dtype=torch.float64)
    early[hard] = torch.stack([spread.roll(int(c)) for c in labels[hard]])  # label at 0.3, label+1 at 0.4
    log = lambda p: p.log()  # noqa: E731  logits whose softmax is p
    late_hard = probs(true, torch.full((n,), 0.95))  # epoch 3: every sample's true class, hard ones too
    memorised = probs(labels, torch.full((n,), 0.97))  # epoch 4: every label, flipped ones too
    return labels, noisy, hard, {1: log(early), 2: log(early), 3: log(late_hard), 4: log(memorised)}


def test_confident_learning_flags_the_flipped_labels_and_not_the_hard_ones():
    from ckptkd.select.policies.confident import confident_flags, confident_joint, noise_rate

    labels, noisy, hard, logits = _hard_and_noisy()
    ckpts = _ckpts([1, 2, 3, 4])
    ctx = FakeCtx(labels, logits)
    suspect, rate = confident_flags(ckpts, ctx)
    assert suspect.tolist() == noisy.tolist()
    # by hand: row j counts the easy samples labelled j (diagonal) and the flipped ones (off it), and
    # is calibrated to all the samples labelled j, hard ones included
    expected = 0.0
    for j in range(3):
        easy = sum(1 for i in range(40, 120) if i % 3 == j)
        flipped = sum(1 for i in range(20) if (i % 3 + 1) % 3 == j)
        expected += flipped / (easy + flipped) * int((labels == j).sum())
    assert rate == pytest.approx(expected / 120) and 0.19 < rate < 0.21
    assert suspect_labels(ckpts, ctx)[hard].all()  # a negative margin flags the hard ones too
    joint, guess = confident_joint(torch.softmax(logits[1], 1), labels, 3)
    assert (guess[hard] == -1).all() and joint.sum() == 100  # hard samples reach no class's threshold
    assert noise_rate(torch.eye(3) * 40, torch.arange(120) % 3) == 0.0


def test_cl_fit_keeps_the_teacher_that_learns_hard_samples_where_aum_fit_does_not():
    labels, noisy, hard, logits = _hard_and_noisy()
    ckpts = _ckpts([1, 2, 3, 4])
    ctx = FakeCtx(labels, logits)
    assert [c.epoch for c in choose("cl-fit", ckpts, ctx)] == [3]  # not the memorising epoch 4
    # aum-fit counts learning the hard samples against epoch 3 and prefers the unsure early ones
    assert [c.epoch for c in choose("aum-fit", ckpts, ctx)] == [2]


# ---------------------------------------------------------------- label-wave


def _predictions_with_churn(changes, n=200):
    """Predicted classes of len(changes) + 1 checkpoints: step s flips the prediction of
    ``changes[s]`` samples (a different block each step, so the counts are exact)."""
    preds = [torch.zeros(n, dtype=torch.long)]
    start = 0
    for c in changes:
        p = preds[-1].clone()
        idx = torch.arange(start, start + c) % n
        p[idx] = (p[idx] + 1) % 3
        preds.append(p)
        start += c
    return preds


def _logits(preds):
    return {e: _onehot(p, 5.0) for e, p in zip(range(10, 10 * (len(preds) + 1), 10), preds)}


def test_churn_rates_count_the_changed_predictions_per_epoch():
    preds = _predictions_with_churn([30, 10])
    rates = churn_rates(preds, [10, 20, 40])
    assert rates == pytest.approx([(3.0, math.sqrt(30) / 10), (0.5, math.sqrt(10) / 20)])


def test_label_wave_picks_the_first_local_minimum_of_the_churn():
    preds = _predictions_with_churn([80, 10, 60, 5])  # falls, then rises by 50 > sqrt(10 + 60): the onset
    ckpts = _ckpts([10, 20, 30, 40, 50])
    ctx = FakeCtx(torch.zeros(200, dtype=torch.long), _logits(preds))
    assert onset_index(churn_rates(preds, [10, 20, 30, 40, 50])) == 2
    assert [c.epoch for c in choose("label-wave", ckpts, ctx)] == [30]  # where the quiet step ends
    assert [c.epoch for c in choose("label-wave", ckpts, ctx, k=3)] == [20, 30, 40]


@pytest.mark.parametrize("changes", [[80, 40, 20, 10], [80, 10, 14, 5]], ids=["settling", "rise-within-noise"])
def test_label_wave_keeps_the_last_without_a_rise_beyond_the_noise(changes):
    preds = _predictions_with_churn(changes)  # 10 -> 14 is below sqrt(10 + 14) = 4.9: not a rise
    ckpts = _ckpts([10, 20, 30, 40, 50])
    ctx = FakeCtx(torch.zeros(200, dtype=torch.long), _logits(preds))
    assert [c.epoch for c in choose("label-wave", ckpts, ctx)] == [50]


@pytest.mark.parametrize("name", ["aum-fit", "cl-fit", "label-wave"])
def test_a_trajectory_of_fewer_than_three_checkpoints_is_refused(name):
    ctx = FakeCtx(TRUE, {1: _onehot(TRUE, 1.0), 2: _onehot(TRUE, 2.0)})
    with pytest.raises(CkptkdError, match=rf"policy {name} reads the trajectory and needs at least 3 checkpoints, "
                                          r"got 2; save more often"):
        choose(name, _ckpts([1, 2]), ctx)


# ---------------------------------------------------------------- the cached input on a real trajectory

TRAINSET = ["aum-fit", "cl-fit", "label-wave"]
OTHERS = [p for p in POLICIES if p not in TRAINSET and p != "explicit" and not POLICIES[p].needs]


def _ctx(data, folder=None):
    from ckptkd import StageConfig
    from ckptkd.config import InfoConfig, ProxyConfig

    return SelectionContext(data, folder=folder, info=InfoConfig(probe_size=100),
                            student=StageConfig(model="mlp_xs", epochs=2, batch_size=64),
                            proxy=ProxyConfig(epoch_fraction=0.5, data_fraction=0.5))


def _digest(folder: Path) -> dict:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_outputs_are_cached_by_key_and_read_back(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()
    first = _ctx(digits, tmp_path)
    records = [first.train_outputs(c) for c in ckpts]
    files = sorted((tmp_path / FOLDER_NAME).glob("*.safetensors"))
    assert len(files) == 3 and all(r["logits"].shape == (len(digits.y_train), 10) for r in records)
    again = _ctx(digits, tmp_path)  # a new context reads the files back: same logits, same recorded cost
    before = _digest(tmp_path)
    for c, r in zip(ckpts, records):
        back = again.train_outputs(c)
        assert torch.equal(back["logits"], r["logits"]) and back["wall_s"] == pytest.approx(r["wall_s"])
    assert _digest(tmp_path) == before
    assert get_policy("aum-fit").cost_s(ckpts, again) == pytest.approx(sum(r["wall_s"] for r in records))
    # the logits are the model's on the un-augmented training inputs
    from ckptkd.trajectory import load_model

    model = load_model(ckpts[-1], digits.num_classes, digits.in_shape).eval()
    with torch.no_grad():
        direct = model(digits.x_train[:50]).float()
    assert torch.allclose(records[-1]["logits"][:50], direct, atol=1e-4)
    # a damaged file is only a lost speed-up: computed again, the same logits
    files[0].write_bytes(b"not a safetensors file")
    damaged = _ctx(digits, tmp_path)
    assert all(torch.equal(damaged.train_outputs(c)["logits"], r["logits"]) for c, r in zip(ckpts, records))
    # other labels are another key: never a stale record
    noisy = load_dataset(DataConfig(spec="digits", label_noise=0.2))
    _ctx(noisy, tmp_path).train_outputs(ckpts[0])
    assert len(list((tmp_path / FOLDER_NAME).glob("*.safetensors"))) == 4


def test_the_training_pass_changes_no_other_cached_input_or_score(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()
    ctx = _ctx(digits, tmp_path)
    scored = [p for p in POLICIES if "train" not in POLICIES[p].needs and p != "explicit"]  # the pass's readers
    before_scores = {p: policy_scores(p, ckpts, ctx) for p in scored}
    before = _digest(tmp_path)
    for name in TRAINSET:
        policy_scores(name, ckpts, ctx)
    after = _digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith(FOLDER_NAME + "/")} == before
    assert any(k.startswith(FOLDER_NAME + "/") for k in after)
    fresh = _ctx(digits, tmp_path)
    assert {p: policy_scores(p, ckpts, fresh) for p in scored} == before_scores


class _Poison:
    def __getattr__(self, name):
        raise AssertionError(f"the training-set policies read a held-out split (.{name})")

    def __len__(self):
        raise AssertionError("the training-set policies read a held-out split (len)")

    def __getitem__(self, i):
        raise AssertionError("the training-set policies read a held-out split (indexing)")


@pytest.mark.parametrize("name", TRAINSET)
def test_the_training_set_policies_read_neither_the_test_nor_the_validation_split(name, trained_run, digits):
    ckpts = trained_run.checkpoints()
    clean = policy_scores(name, ckpts, _ctx(digits))
    poisoned = dataclasses.replace(digits, x_test=_Poison(), y_test=_Poison(), x_val=_Poison(), y_val=_Poison())
    ctx = _ctx(poisoned)
    ctx.require_val = lambda who: None  # the poisoned split has no len(); these policies never ask for it
    assert policy_scores(name, ckpts, ctx) == pytest.approx(clean, abs=1e-9)


@pytest.mark.parametrize("name", TRAINSET)
def test_the_training_set_policies_work_without_a_validation_split(name, trained_run):
    no_val = load_dataset(DataConfig(spec="digits", val_fraction=0))
    scores = policy_scores(name, trained_run.checkpoints(), _ctx(no_val))
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)


def test_select_command_reports_the_new_policies(run_copy, capsys):
    from ckptkd.cli import main

    for name in TRAINSET:
        assert main(["select", str(run_copy.path), "--policy", name, "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["parts"][0]["distillations"] == 0.0 and len(out["ranking"]) == 3
        assert out["confidence"]["picks"][0]["epoch"] == out["chosen"][0]["epoch"]
