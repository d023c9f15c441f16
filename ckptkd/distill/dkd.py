"""Method ``dkd``: Decoupled Knowledge Distillation, Zhao, Cui, Song, Qiu & Liang, CVPR 2022
(arXiv:2203.08679; official code: github.com/megvii-research/mdistiller, ``distillers/DKD.py``).

The paper splits Hinton's KL(p_t || p_s) at temperature T into two parts (its Eq. 4):

    KD = TCKD + (1 - p_t,gt) * NCKD
    TCKD = KL(b_t || b_s),    b = [p_gt, 1 - p_gt]            (target class vs the rest)
    NCKD = KL(p^_t || p^_s),  p^_j = p_j / (1 - p_gt), j != gt (among the non-target classes)

and weighs the two freely: loss = ce_weight * CE + w(epoch) * T^2 * (alpha * TCKD + beta * NCKD),
with the official warm-up w(epoch) = min(epoch / warmup, 1) (epochs count from 1). The
coupling weight (1 - p_t,gt) that suppresses NCKD on samples the teacher is sure of is gone.
Parameters: ``kd.temperature`` and ``kd.dkd.{ce_weight, alpha, beta, warmup}``, defaults as
the official CIFAR-100 config (1, 1, 8, 20).

What the teacher gives. Both parts are functions of the teacher's distribution at T alone
(b_t and p^_t are p_t^T regrouped), so DKD reads exactly what KD reads, log p_t^T, and the
teacher cache serves it unchanged: its key (members, combine, temperature for ``probs``,
data, views) already names everything the target depends on. Here the parts are computed
from log-probabilities with logsumexp (log(1 - p_gt) = logsumexp of the non-target
log-probabilities), so they stay accurate where p_gt is near 1, and with the gradient in
closed form (``_DKDTerms``), which keeps DKD's per-step cost near KD's.

Ensembles. With ``combine: logits`` the teacher's logits are the members' mean logits and
p_t^T their softmax at T; with ``combine: probs`` there are no ensemble logits, and DKD
decouples the ensemble's distribution p_t^T = mean of the members' softmax(z_k / T) — the
same target KD distils (target class vs rest of the averaged distribution, and the averaged
distribution renormalised over the non-target classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import KDConfig
from ..errors import CkptkdError
from .registry import Method, register_method


class _DKDTerms(torch.autograd.Function):
    """(TCKD, NCKD) summed over the batch, with the gradient in closed form.

    Per sample, with z = s / T, p_s = softmax(z), p^ a distribution renormalised over the
    non-target classes (0 at gt) and b_t = [p_t,gt, p_t,rest]:
        TCKD = p_t,gt (log p_t,gt - log p_s,gt) + p_t,rest (log p_t,rest - log p_s,rest)
        NCKD = sum_{j != gt} p_t,j (log p_t,j - log p_s,j) / p_t,rest - log p_t,rest + log p_s,rest
        d TCKD / dz = p_s - p_t,gt * onehot(gt) - p_t,rest * p^_s
        d NCKD / dz = p^_s - p^_t
    Each "rest" is a sum over the non-target classes, never 1 - p_gt, so nothing cancels where
    p_gt is near 1. About twenty small ops forward and six back: DKD's step costs about what
    KD's one kl_div does, where autograd through the paper's form costs twice that.
    """

    @staticmethod
    def forward(ctx, z, log_pt, y, scale):
        tiny = torch.finfo(z.dtype).tiny  # a rest that underflows stays a (huge) finite log
        log_ps = F.log_softmax(z, dim=1)
        ps, pt = log_ps.exp(), log_pt.exp()
        rest = torch.ones_like(z).scatter_(1, y[:, None], 0.0)  # 1 off the target class
        ps_rest = (ps * rest).sum(1).clamp_min(tiny)
        pt_rest = (pt * rest).sum(1).clamp_min(tiny)
        w = pt * (log_pt - log_ps)  # the row of KL(p_t || p_s), class by class
        nt = (w * rest).sum(1)
        s_rest, t_rest = ps_rest.log(), pt_rest.log()
        tckd = w.gather(1, y[:, None]).squeeze(1) + pt_rest * (t_rest - s_rest)
        nckd = nt / pt_rest - t_rest + s_rest
        ctx.save_for_backward(ps, pt, rest, ps_rest, pt_rest, y)
        ctx.scale = scale
        return scale[0] * tckd.sum(), scale[1] * nckd.sum()

    @staticmethod
    def backward(ctx, g_tckd, g_nckd):
        ps, pt, rest, ps_rest, pt_rest, y = ctx.saved_tensors
        hat_s = ps * rest / ps_rest[:, None]
        b_gt = pt.gather(1, y[:, None])
        d_tckd = (ps - pt_rest[:, None] * hat_s).scatter_add_(1, y[:, None], -b_gt)
        d_nckd = hat_s - pt * rest / pt_rest[:, None]
        return (g_tckd * ctx.scale[0]) * d_tckd + (g_nckd * ctx.scale[1]) * d_nckd, None, None, None


def dkd_terms(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, y: torch.Tensor,
              temperature: float, weights: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2 * KL averaged over the batch and times its weight, from the
    student's logits and the teacher's log p_t^T (no gradient flows to the teacher). The
    weights are applied inside, which saves the autograd graph two nodes per step."""
    z = student_logits.float() / temperature
    scale = temperature**2 / len(y)
    return _DKDTerms.apply(z, teacher_log_probs.detach().float(), y, (scale * weights[0], scale * weights[1]))


def warmup_factor(epoch: int, warmup: int) -> float:
    """The official linear warm-up of the DKD term: min(epoch / warmup, 1), or 1 without one."""
    return min(epoch / warmup, 1.0) if warmup > 0 else 1.0


@register_method
class DKD(Method):
    """Decoupled KD: returns ``{"ce": ..., "tckd": ..., "nckd": ...}``, already weighted."""

    name = "dkd"
    summary = "Decoupled KD (Zhao et al. 2022): ce_weight * CE + alpha * TCKD + beta * NCKD, with warm-up"

    @classmethod
    def check(cls, cfg: KDConfig) -> None:
        p = cfg.dkd
        for key in ("ce_weight", "alpha", "beta", "warmup"):
            if getattr(p, key) < 0:
                raise CkptkdError(f"kd.dkd.{key} must be >= 0, got {getattr(p, key)}")

    def __call__(self, model, x, y, idx, epoch):
        p = self.cfg.dkd
        logits = model(x)
        target = self.teacher_log_probs(x, idx, epoch)
        w = warmup_factor(epoch, p.warmup)
        tckd, nckd = dkd_terms(logits, target, y, self.cfg.temperature, (w * p.alpha, w * p.beta))
        return logits, {"ce": p.ce_weight * F.cross_entropy(logits, y), "tckd": tckd, "nckd": nckd}
