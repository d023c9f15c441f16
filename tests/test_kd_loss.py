"""The KD loss is Hinton's, checked through its gradient with respect to the student's logits.

For loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T), averaged over a batch
of B, the gradient with respect to the student logits s is
    alpha * (softmax(s) - onehot(y)) / B  +  (1 - alpha) * T * (softmax(s/T) - softmax(t/T)) / B,
so a loss that ignored the teacher, or used it at the wrong temperature, fails here.
"""
import pytest
import torch
import torch.nn.functional as F

from ckptkd import KDConfig
from ckptkd.distill import KD
from ckptkd.teacher import Teacher
from conftest import Fixed


def kd_terms(student_logits, teacher_logits, y, cfg):
    s = student_logits.clone().requires_grad_(True)
    method = KD(Teacher([Fixed(teacher_logits)]), cfg)
    _, losses = method(Fixed(s), torch.zeros(len(y), 3), y, torch.arange(len(y)), 1)
    return s, losses


@pytest.mark.parametrize("alpha,temperature", [(0.1, 4.0), (0.5, 1.0), (0.0, 2.5)])
def test_the_kd_gradient_pulls_the_student_towards_the_teacher(alpha, temperature):
    g = torch.Generator().manual_seed(0)
    B, C = 6, 5
    s, t = torch.randn(B, C, generator=g), 3 * torch.randn(B, C, generator=g)
    y = torch.randint(0, C, (B,), generator=g)
    cfg = KDConfig(alpha=alpha, temperature=temperature)

    student, losses = kd_terms(s, t, y, cfg)
    (grad_kd,) = torch.autograd.grad(losses["kd"], student, retain_graph=True)
    want_kd = (1 - alpha) * temperature * (F.softmax(s / temperature, 1) - F.softmax(t / temperature, 1)) / B
    torch.testing.assert_close(grad_kd, want_kd, rtol=1e-5, atol=1e-7)

    (grad_ce,) = torch.autograd.grad(losses["ce"], student)
    want_ce = alpha * (F.softmax(s, 1) - F.one_hot(y, C).float()) / B
    torch.testing.assert_close(grad_ce, want_ce, rtol=1e-5, atol=1e-7)


def test_the_kd_term_vanishes_only_where_the_student_agrees_with_the_teacher():
    t = torch.tensor([[4.0, 0.0, -2.0], [0.5, 1.5, -1.0]])
    y = torch.tensor([0, 1])
    _, same = kd_terms(t, t, y, KDConfig(alpha=0.0, temperature=4.0))
    _, other = kd_terms(t.flip(1), t, y, KDConfig(alpha=0.0, temperature=4.0))
    assert abs(same["kd"].item()) < 1e-6
    assert other["kd"].item() > 0.1
