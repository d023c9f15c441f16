"""The registered distillation methods: each one's loss on a case computed by hand (numpy),
that each moves the student toward its teacher, and the registry's checks.

Known answers: 2 samples x 3 classes. DKD's is computed from probabilities the way the
paper writes it (b = [p_gt, 1 - p_gt], p^ = p renormalised over the other classes), which
is a different route from the library's logsumexp form.
"""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ckptkd import CkptkdError, DataConfig, KDConfig, StageConfig, Teacher, distill, fit, load_dataset, train
from ckptkd.cli import main
from ckptkd.config import from_dict
from ckptkd.distill import DKD, KD, METHODS, FitNet, check_method, dkd_loss, dkd_terms, kd_loss, method_key
from ckptkd.models.base import Classifier, penultimate
from ckptkd.train import CrossEntropy, build_model
from conftest import Fixed

S = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])  # student logits
T_LOGITS = np.array([[2.0, 0.0, 1.0], [0.0, 0.5, 3.0]])  # teacher logits
Y = np.array([1, 2])
TEMP = 2.0


def np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(1)


def np_ce(s, y):
    return -np.log(np_softmax(s)[np.arange(len(y)), y]).mean()


def run_method(method_cls, cfg, epoch=1):
    s = torch.tensor(S, dtype=torch.float32, requires_grad=True)
    method = method_cls(Teacher([Fixed(torch.tensor(T_LOGITS, dtype=torch.float32))]), cfg)
    _, losses = method(Fixed(s), torch.zeros(2, 3), torch.tensor(Y), torch.arange(2), epoch)
    return {k: v.item() for k, v in losses.items()}


def test_kd_known_answer():
    ps, pt = np_softmax(S / TEMP), np_softmax(T_LOGITS / TEMP)
    losses = run_method(KD, KDConfig(temperature=TEMP, alpha=0.3))
    assert losses["kd"] == pytest.approx(0.7 * TEMP**2 * np_kl(pt, ps).mean(), rel=1e-5)
    assert losses["ce"] == pytest.approx(0.3 * np_ce(S, Y), rel=1e-5)


def np_dkd(s, t, y, temp):
    """TCKD and NCKD per sample, from probabilities as the paper writes them."""
    ps, pt = np_softmax(s / temp), np_softmax(t / temp)
    rows = np.arange(len(y))
    b_s = np.stack([ps[rows, y], 1 - ps[rows, y]], 1)
    b_t = np.stack([pt[rows, y], 1 - pt[rows, y]], 1)
    others = np.array([[j for j in range(s.shape[1]) if j != k] for k in y])
    hat_s = np.take_along_axis(ps, others, 1) / b_s[:, 1:]
    hat_t = np.take_along_axis(pt, others, 1) / b_t[:, 1:]
    return np_kl(b_t, b_s), np_kl(hat_t, hat_s), pt[rows, y]


def test_dkd_known_answer_with_warmup():
    tckd, nckd, _ = np_dkd(S, T_LOGITS, Y, TEMP)
    cfg = from_dict(KDConfig, {"method": "dkd", "temperature": TEMP,
                               "dkd": {"ce_weight": 0.5, "alpha": 2.0, "beta": 8.0, "warmup": 4}}, "kd")
    for epoch, w in ((1, 0.25), (3, 0.75), (4, 1.0), (9, 1.0)):  # the official min(epoch / warmup, 1)
        losses = run_method(DKD, cfg, epoch)
        assert losses["dkd"] == pytest.approx(w * TEMP**2 * (2.0 * tckd.mean() + 8.0 * nckd.mean()), rel=1e-5)
        assert losses["ce"] == pytest.approx(0.5 * np_ce(S, Y), rel=1e-5)
    for alpha, beta in ((1.0, 0.0), (0.0, 1.0)):  # each part on its own
        only = dataclasses.replace(cfg, dkd=dataclasses.replace(cfg.dkd, alpha=alpha, beta=beta, warmup=0))
        want = TEMP**2 * (alpha * tckd.mean() + beta * nckd.mean())
        assert run_method(DKD, only, 1)["dkd"] == pytest.approx(want, rel=1e-5)


def test_dkd_parts_add_up_to_kd():
    """The paper's Eq. 4, per sample: KD = TCKD + (1 - p_t,gt) * NCKD, with the library's kd_loss."""
    s, t = torch.tensor(S, dtype=torch.float32), torch.tensor(T_LOGITS, dtype=torch.float32)
    log_pt = F.log_softmax(t / TEMP, -1)
    for i in range(2):
        tckd, nckd = dkd_terms(s[i:i + 1], log_pt[i:i + 1], torch.tensor(Y[i:i + 1]), TEMP)
        p_gt = log_pt[i, Y[i]].exp()
        kd = kd_loss(s[i:i + 1], log_pt[i:i + 1], TEMP)
        torch.testing.assert_close(tckd + (1 - p_gt) * nckd, kd, rtol=1e-5, atol=1e-6)


def paper_dkd(s, log_pt, y, temp):
    """TCKD and NCKD (batch means, times T^2) in the paper's form, by autograd: the reference
    for the library's closed-form gradient."""
    ps, pt = F.softmax(s / temp, 1), log_pt.exp()
    gt = F.one_hot(y, s.shape[1]).bool()
    b_s = torch.stack([ps[gt], ps.masked_fill(gt, 0).sum(1)], 1)
    b_t = torch.stack([pt[gt], pt.masked_fill(gt, 0).sum(1)], 1)
    hat_s = ps[~gt].view(len(y), -1) / b_s[:, 1:]
    hat_t = pt[~gt].view(len(y), -1) / b_t[:, 1:]
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # noqa: E731
    return temp**2 * kl(b_t, b_s), temp**2 * kl(hat_t, hat_s)


@pytest.mark.parametrize("scale", [1.0, 4.0])  # 4: a sure teacher, p_gt near 1
def test_dkd_gradient_is_the_papers(scale):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(16, 7, generator=g, dtype=torch.float64)
    log_pt = F.log_softmax(scale * 3 * torch.randn(16, 7, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 7, (16,), generator=g)
    for alpha, beta in ((1.0, 0.0), (0.0, 1.0), (2.0, 8.0)):
        mine = s.clone().float().requires_grad_(True)
        loss = dkd_loss(mine, log_pt.float(), y, TEMP, alpha, beta)
        (grad,) = torch.autograd.grad(3.0 * loss, mine)  # an upstream gradient other than 1
        ref = s.clone().requires_grad_(True)
        r_tckd, r_nckd = paper_dkd(ref, log_pt, y, TEMP)
        want_loss = alpha * r_tckd + beta * r_nckd
        (want,) = torch.autograd.grad(3.0 * want_loss, ref)
        torch.testing.assert_close(loss.double(), want_loss.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grad.double(), want, rtol=1e-4, atol=1e-6)


class Linear2(Classifier):
    """A model whose penultimate features are ``x @ a`` (no pooling): features known by hand."""

    def __init__(self, a, fc):
        super().__init__()
        self.body = nn.Linear(a.shape[0], a.shape[1], bias=False)
        self.body.weight.data = torch.tensor(a.T, dtype=torch.float32)
        self.num_features = a.shape[1]
        self.fc = nn.Linear(a.shape[1], fc.shape[0], bias=False)
        self.fc.weight.data = torch.tensor(fc, dtype=torch.float32)

    def forward_features(self, x):
        return self.body(x)


def test_fitnet_known_answer():
    x = np.array([[1.0, -1.0], [0.5, 2.0]])
    a_s, a_t = np.array([[1.0, 0.0], [0.5, 1.0]]), np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
    fc = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    student, teacher_model = Linear2(a_s, fc), Linear2(a_t, np.ones((3, 3)))
    data = type("D", (), {"in_shape": (2,)})()
    cfg = from_dict(KDConfig, {"method": "fitnet", "fitnet": {"ce_weight": 0.5, "weight": 3.0}}, "kd")
    method = FitNet(Teacher([teacher_model]), cfg, student=student, data=data)
    w, b = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]), np.array([0.1, 0.0, -0.2])
    method.extra.weight.data, method.extra.bias.data = torch.tensor(w).float(), torch.tensor(b).float()
    _, losses = method(student, torch.tensor(x).float(), torch.tensor([0, 2]), torch.arange(2), 1)
    f_s, f_t = x @ a_s, x @ a_t
    want_hint = ((f_s @ w.T + b - f_t) ** 2).mean()
    assert losses["hint"].item() == pytest.approx(3.0 * want_hint, rel=1e-5)
    assert losses["ce"].item() == pytest.approx(0.5 * np_ce(f_s @ fc.T, np.array([0, 2])), rel=1e-5)


# ---------------------------------------------------------------- the student moves toward the teacher


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(spec="digits"))


@pytest.fixture(scope="module")
def teacher_model(digits):
    """A teacher that disagrees with the labels (it learnt class y + 1): a student that follows
    the labels alone moves away from it, so only a method that reads the teacher comes close."""
    shifted = dataclasses.replace(digits, y_train=(digits.y_train + 1) % digits.num_classes)
    model, _ = train(shifted, StageConfig(model="mlp_m", epochs=4), seed=0, progress=False)
    return model


STUDENT = StageConfig(model="mlp_xs", epochs=3)


def student_under(method_factory, digits):
    student = build_model(STUDENT.model, digits, 1)
    method = method_factory(student)
    fit(student, method, digits, STUDENT, seed=1, progress=False)
    return student.eval(), method


def kl_to_teacher(student, teacher, digits, temp=4.0):
    with torch.no_grad():
        return kd_loss(student(digits.x_train), teacher.log_probs(digits.x_train, temp), temp).item()


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_logit_methods_pull_the_student_toward_the_teacher(method, digits, teacher_model):
    teacher = Teacher([teacher_model])
    # the distillation terms alone (no cross-entropy), against cross-entropy alone
    cfg = from_dict(KDConfig, {"method": method, "alpha": 0.0, "dkd": {"ce_weight": 0.0, "warmup": 1}}, "kd")
    start = kl_to_teacher(build_model(STUDENT.model, digits, 1).eval(), teacher, digits)
    ce, _ = student_under(lambda s: CrossEntropy(), digits)
    kd, _ = student_under(lambda s: METHODS[method](teacher, cfg), digits)
    assert kl_to_teacher(kd, teacher, digits) < 0.5 * start < start < kl_to_teacher(ce, teacher, digits)


def test_fitnet_pulls_the_student_features_toward_the_teacher(digits, teacher_model):
    """The hint term alone: the regressor's error on the teacher's features ends lower when the
    student's features train with it than when only the regressor trains (student frozen)."""
    teacher = Teacher([teacher_model])
    cfg = from_dict(KDConfig, {"method": "fitnet", "fitnet": {"weight": 10.0, "ce_weight": 0.0}}, "kd")
    f_t = penultimate(teacher_model.eval(), digits.x_train)
    errors, initial = {}, {}
    for frozen in (True, False):
        def make(student):
            student.requires_grad_(not frozen)
            method = FitNet(teacher, cfg, student=student, data=digits)
            initial[frozen] = method.extra.weight.detach().clone()
            return method

        student, method = student_under(make, digits)
        assert not torch.equal(method.extra.weight, initial[frozen])  # the regressor trains with the student
        with torch.no_grad():
            errors[frozen] = F.mse_loss(method.extra(penultimate(student, digits.x_train)), f_t).item()
    assert errors[False] < 0.93 * errors[True]


def test_dkd_reads_the_cache_and_gives_the_same_student(tmp_path):
    data = load_dataset(DataConfig(spec="digits", augment="shift"))
    members = [train(data, StageConfig(model="mlp_xs", epochs=1), seed=s, progress=False)[0] for s in (0, 1)]
    cfg = from_dict(KDConfig, {"method": "dkd", "combine": "probs", "dkd": {"warmup": 2}}, "kd")
    stage = StageConfig(model="mlp_xs", epochs=2)
    a, _ = distill(data, stage, Teacher(members, "probs"), cfg, seed=3, progress=False)
    b, _ = distill(data, stage, Teacher(members, "probs"), cfg, seed=3, progress=False, cache_dir=tmp_path)
    assert list(tmp_path.glob("*.npy"))  # the entry KD would use: DKD reads the same target
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ---------------------------------------------------------------- the registry


def test_every_method_is_registered_with_kd_first():
    assert list(METHODS)[0] == "kd" and {"kd", "dkd", "fitnet"} <= set(METHODS)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(CkptkdError,
                       match=r"unknown kd.method 'dkdd' \(did you mean 'dkd'\?\); registered methods: kd, dkd"):
        check_method(KDConfig(method="dkdd"))


def test_method_parameters_are_typed_and_checked():
    with pytest.raises(CkptkdError, match="config key 'kd.dkd.beta' must be float"):
        from_dict(KDConfig, {"dkd": {"beta": "high"}}, "kd")
    with pytest.raises(CkptkdError, match="unknown config key 'kd.dkd.gamma'"):
        from_dict(KDConfig, {"dkd": {"gamma": 1.0}}, "kd")
    with pytest.raises(CkptkdError, match=r"kd.dkd.warmup must be >= 0, got -1"):
        check_method(from_dict(KDConfig, {"dkd": {"warmup": -1}}, "kd"))  # checked whichever method is chosen


def test_method_key_keeps_kd_keys_and_separates_methods():
    assert method_key(KDConfig()) == {"temperature": 4.0, "alpha": 0.1, "combine": "logits"}  # studies' cells stay
    dkd = method_key(KDConfig(method="dkd"))
    assert dkd["method"] == "dkd" and dkd["params"]["beta"] == 8.0 and "alpha" not in dkd
    other_beta = KDConfig(method="dkd", dkd=dataclasses.replace(KDConfig().dkd, beta=2.0))
    assert method_key(other_beta) != dkd
    assert method_key(KDConfig(method="fitnet")) == {"method": "fitnet", "params": {"ce_weight": 1.0, "weight": 1.0}}


def test_fitnet_refuses_ensembles_and_models_without_features(digits, teacher_model):
    cfg = KDConfig(method="fitnet")
    with pytest.raises(CkptkdError, match="fitnet learns from one teacher's features, got an ensemble of 2"):
        distill(digits, STUDENT, Teacher([teacher_model, teacher_model]), cfg, progress=False)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(CkptkdError, match="the teacher model 'Sequential' has no forward_features"):
        distill(digits, STUDENT, Teacher([plain]), cfg, progress=False)


def test_cli_refuses_a_student_without_features(tmp_path, monkeypatch, capsys, digits, teacher_model):
    (tmp_path / "plainnet.py").write_text(
        "from torch import nn\n\ndef make(num_classes, in_shape):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from ckptkd.trajectory import Run

    run = Run.create(tmp_path / "t", {}, model="mlp_m", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint)
    ckpt = run.save_checkpoint(teacher_model.state_dict(), 1, {})
    code = main(["distill", "--teacher", str(ckpt.path), "--data", "digits", "--method", "fitnet",
                 "--model", "plainnet:make", "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not (tmp_path / "s").exists()
    assert err == ["ckptkd: error: kd.method fitnet needs the student's penultimate features, but the student model "
                   "'plainnet:make' has no forward_features/forward_head; use a ckptkd model (`ckptkd models`) or a "
                   "logit method (kd, dkd)"]


def test_a_killed_fitnet_distillation_resumes_with_its_regressor(tmp_path, digits, teacher_model, monkeypatch):
    """The regressor is part of the training state: killed after epoch 2 and resumed, the
    student ends bitwise where an uninterrupted one does (on CPU)."""
    import os
    import signal
    import subprocess
    import sys

    from ckptkd.trajectory import Run

    monkeypatch.setenv("CKPTKD_TENSORBOARD", "0")
    run = Run.create(tmp_path / "t", {}, model="mlp_m", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint)
    ckpt = run.save_checkpoint(teacher_model.state_dict(), 1, {})
    args = ["distill", "--teacher", str(ckpt.path), "--data", "digits", "--model", "mlp_xs", "--method", "fitnet",
            "--epochs", "3", "--save-every", "1", "--batch-size", "64", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CKPTKD_TENSORBOARD": "0", "CKPTKD_FAULT": "after-save:2"}
    proc = subprocess.run([sys.executable, "-m", "ckptkd", *args, "--out", str(tmp_path / "s")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "extra" in Run(tmp_path / "s").load_state()
    assert main([*args, "--out", str(tmp_path / "s"), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    resumed, one = Run(tmp_path / "s").checkpoints(), Run(tmp_path / "one").checkpoints()
    assert [c.sha256 for c in resumed] == [c.sha256 for c in one] and len(one) == 3


def test_studies_key_cells_by_method_and_fitnet_gets_no_ensembles(tmp_path):
    """kd and dkd students of one checkpoint never share a key; a fitnet study runs the no-KD and
    per-checkpoint cells only, and its tables name the method."""
    from ckptkd.config import StudyConfig
    from ckptkd.report.study import render_markdown
    from ckptkd.study import cells as cells_mod
    from ckptkd.study import run_study

    tiny = {"name": "tiny", "data": {"spec": "digits", "augment": False},
            "teacher": {"model": "mlp_s", "epochs": 3, "save_every": 1, "batch_size": 64},
            "student": {"model": "mlp_xs", "epochs": 1, "batch_size": 64}, "info": {"probe_size": 200},
            "teacher_seeds": [0, 1], "student_seeds": [0], "estimators": ["kde"], "policies": ["best-val"],
            "snapshot_policies": ["best-val"], "kd": {"method": "fitnet"}}
    cfg = from_dict(StudyConfig, tiny)
    results = run_study(cfg, tmp_path / "fitnet", progress=False)
    assert {r["cell"].split("/")[1] for r in results["students"]} == {"nokd", "ckpt-0001", "ckpt-0002", "ckpt-0003"}
    assert "distilled with fitnet (ce_weight=1, weight=1)" in render_markdown(results)
    assert render_markdown(results).count("(students: fitnet (ce_weight=1, weight=1))") == 5  # every table
    cell = next(c for c in results["students"] if c["group"] == "ckpt")
    student = cells_mod.Cell(cell["cell"], "student", 0, "ckpt",
                             (str(tmp_path / "fitnet/cells/teacher/seed0/checkpoints/epoch_0001.safetensors"),))
    keys = {m: cells_mod.cell_key(student, from_dict(StudyConfig, {**tiny, "kd": {"method": m}}))
            for m in ("kd", "dkd", "fitnet")}
    assert len(set(keys.values())) == 3


def test_cli_distills_with_dkd_from_the_cache(tmp_path, digits, teacher_model, capsys):
    from ckptkd.trajectory import Run

    run = Run.create(tmp_path / "t", {}, model="mlp_m", num_classes=10, in_shape=digits.in_shape,
                     data_fingerprint=digits.fingerprint)
    ckpt = run.save_checkpoint(teacher_model.state_dict(), 1, {})
    args = ["distill", "--teacher", str(ckpt.path), "--data", "digits", "--model", "mlp_xs", "--epochs", "1",
            "--method", "dkd", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    assert Run(tmp_path / "s").config["kd"]["method"] == "dkd" and list((tmp_path / "cache").glob("*.npy"))
