"""Method ``kd``: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T), where p^T = softmax(logits / T).
The T^2 keeps the soft-target gradients at the scale of the hard-target ones as T changes.
Parameters: ``kd.temperature``, ``kd.alpha`` (the weight of cross-entropy).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Method, register_method


def kd_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) at temperature T, averaged over the batch."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    # one call instead of five tensor ops: per step, KD's loss arithmetic is most of what it
    # costs over cross-entropy once the teacher's outputs come from a cache
    return temperature**2 * F.kl_div(log_ps, teacher_log_probs, reduction="batchmean", log_target=True)


@register_method
class KD(Method):
    """Hinton KD as a loss method: returns ``{"ce": ..., "kd": ...}``, already weighted.

    With ``cache`` (a ``ckptkd.teacher_cache.TeacherCache`` of this teacher and data), the
    target of sample ``idx`` in ``epoch`` is read from it; views it does not hold are
    computed by the teacher, as without a cache.
    """

    name = "kd"
    summary = "Hinton KD: alpha * CE + (1 - alpha) * T^2 * KL(teacher || student) at temperature T"
    shared = ("temperature", "alpha", "combine")

    def __call__(self, model, x, y, idx, epoch):
        logits = model(x)
        target = self.teacher_log_probs(x, idx, epoch)
        return logits, {
            "ce": self.cfg.alpha * F.cross_entropy(logits, y),
            "kd": (1 - self.cfg.alpha) * kd_loss(logits, target, self.cfg.temperature),
        }
