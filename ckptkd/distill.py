"""Distillation: the Hinton KD loss as a method for ``fit``, and ``distill`` (teachers: ``ckptkd.teacher``).

Hinton, Vinyals & Dean (2015): loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T),
where p^T = softmax(logits / T). The T^2 keeps the soft-target gradients at the scale of
the hard-target ones as T changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import parallel
from .config import KDConfig, StageConfig
from .data import Dataset
from .errors import CkptkdError
from .teacher import Teacher
from .train import build_model, fit
from .trajectory import Run


def kd_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) at temperature T, averaged over the batch."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    # one call instead of five tensor ops: per step, KD's loss arithmetic is most of what it
    # costs over cross-entropy once the teacher's outputs come from a cache
    return temperature**2 * F.kl_div(log_ps, teacher_log_probs, reduction="batchmean", log_target=True)


class KD:
    """Hinton KD as a loss method: returns ``{"ce": ..., "kd": ...}``, already weighted.

    With ``cache`` (a ``ckptkd.teacher_cache.TeacherCache`` of this teacher and data), the
    target of sample ``idx`` in ``epoch`` is read from it; views it does not hold are
    computed by the teacher, as without a cache.
    """

    def __init__(self, teacher, cfg: KDConfig, cache=None):
        self.teacher, self.cfg, self.cache = teacher, cfg, cache

    def teacher_log_probs(self, x, idx, epoch) -> torch.Tensor:
        if self.cache is not None:
            target = self.cache.log_probs(idx, epoch, self.cfg.temperature)
            if target is not None:
                return target.to(x.device, non_blocking=True)
        return self.teacher.log_probs(x, self.cfg.temperature)

    def __call__(self, model, x, y, idx, epoch):
        logits = model(x)
        target = self.teacher_log_probs(x, idx, epoch)
        return logits, {
            "ce": self.cfg.alpha * F.cross_entropy(logits, y),
            "kd": (1 - self.cfg.alpha) * kd_loss(logits, target, self.cfg.temperature),
        }


@torch.no_grad()
def check_teacher_classes(teacher: Teacher, data: Dataset, device="cpu") -> None:
    """Refuse a teacher member whose head has another number of classes than the data: its
    KD target could not be compared with the student's outputs. Checkpoints are checked when
    they are loaded (``load_model``); this catches modules handed to ``Teacher`` in Python."""
    x = torch.zeros((2, *data.in_shape), device=device)  # the head's size does not depend on the inputs
    for i, member in enumerate(teacher.members):
        was_training = member.training
        member.eval()  # a batch of two in train mode would move BatchNorm's running statistics
        classes = member(x).shape[-1]
        member.train(was_training)
        if classes != data.num_classes:
            raise CkptkdError(f"teacher member {i} ({type(member).__name__}) has {classes} outputs but the data has "
                              f"{data.num_classes} classes; give a teacher trained on these classes")


def distill(data: Dataset, stage: StageConfig, teacher: Teacher, kd: KDConfig, *, seed: int = 0,
            device="cpu", run: Run | None = None, progress: bool = True, desc: str = "student",
            cache_dir=None, resume: bool = False):
    """Train ``stage.model`` from scratch under ``teacher``; returns (student, last metrics).

    With ``cache_dir``, the teacher's outputs for ``stage.epochs`` epochs of views are
    computed once into that folder (or found there from an earlier student of the same
    teacher and data) and read instead of running the teacher on every batch. The student
    is the same as without the cache.
    """
    student = build_model(stage.model, data, seed)
    device = parallel.world().device(device)
    teacher.to(device)
    check_teacher_classes(teacher, data, device)
    cache = None
    if cache_dir is not None:
        from .teacher_cache import TeacherCache

        cache = parallel.main_first(lambda: TeacherCache.build(
            cache_dir, teacher, data, kd.temperature, views=stage.epochs, device=device,
            progress=progress and parallel.world().is_main))
    record = fit(student, KD(teacher, kd, cache), data, stage, seed=seed, device=device, run=run,
                 progress=progress, desc=desc, resume=resume)
    if run is not None and parallel.world().is_main:
        run.mark("complete", final=record)
    return student, record
