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
log-probabilities), which needs no large-negative mask and stays finite where p_gt is near 1.

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


def dkd_terms(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, y: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2 * KL averaged over the batch, from the student's logits and the
    teacher's log p_t^T."""
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = teacher_log_probs.float()
    gt = F.one_hot(y, log_ps.shape[-1]).bool()

    def split(lp):  # log p_gt, log(1 - p_gt), and log p^ (its gt entry is never read)
        target = lp.gather(1, y[:, None])
        rest = lp.masked_fill(gt, float("-inf")).logsumexp(1, keepdim=True)
        return target, rest, lp - rest

    s_gt, s_rest, s_hat = split(log_ps)
    t_gt, t_rest, t_hat = split(log_pt)
    tckd = t_gt.exp() * (t_gt - s_gt) + t_rest.exp() * (t_rest - s_rest)
    nckd = torch.where(gt, 0.0, t_hat.exp() * (t_hat - s_hat)).sum(1, keepdim=True)
    scale = temperature**2 / len(y)
    return scale * tckd.sum(), scale * nckd.sum()


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
        tckd, nckd = dkd_terms(logits, target, y, self.cfg.temperature)
        w = warmup_factor(epoch, p.warmup)
        return logits, {"ce": p.ce_weight * F.cross_entropy(logits, y),
                        "tckd": w * p.alpha * tckd, "nckd": w * p.beta * nckd}
