"""Distillation: teachers built from checkpoints, and the Hinton KD loss as a method for ``fit``.

Hinton, Vinyals & Dean (2015): loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T),
where p^T = softmax(logits / T). The T^2 keeps the soft-target gradients at the scale of
the hard-target ones as T changes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import KDConfig, StageConfig
from .data import Dataset
from .errors import CkptkdError
from .train import build_model, fit
from .trajectory import Checkpoint, Run, load_model


class Teacher(nn.Module):
    """One checkpoint or an ensemble of checkpoints, always in eval mode and without gradients.

    ``combine="logits"`` averages member logits (the official code's rule); ``"probs"``
    averages member probabilities at the distillation temperature.
    """

    def __init__(self, members: list[nn.Module], combine: str = "logits"):
        super().__init__()
        if not members:
            raise CkptkdError("a teacher needs at least one checkpoint")
        if combine not in ("logits", "probs"):
            raise CkptkdError(f"combine must be logits or probs, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # a teacher's BatchNorm must never update its statistics

    @classmethod
    def from_checkpoints(cls, ckpts: list[Checkpoint], num_classes: int, in_shape, combine: str = "logits"):
        return cls([load_model(c, num_classes, in_shape) for c in ckpts], combine)

    @torch.no_grad()
    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C) logits of the K members."""
        return torch.stack([m(x).float() for m in self.members])

    def log_probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return combine_log_probs(self.member_logits(x), temperature, self.combine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs(x)  # log-probabilities are valid logits for argmax and cross-entropy


def combine_log_probs(member_logits: torch.Tensor, temperature: float, combine: str) -> torch.Tensor:
    """Log of the ensemble's distribution at ``temperature`` from (K, B, C) member logits."""
    if combine == "logits":
        return F.log_softmax(member_logits.mean(0) / temperature, dim=-1)
    k = member_logits.shape[0]
    return torch.logsumexp(F.log_softmax(member_logits / temperature, dim=-1), dim=0) - math.log(k)


def kd_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s) at temperature T, averaged over the batch."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - log_ps)).sum(-1).mean()
    return temperature**2 * kl


class KD:
    """Hinton KD as a loss method: returns ``{"ce": ..., "kd": ...}``, already weighted."""

    def __init__(self, teacher, cfg: KDConfig):
        self.teacher, self.cfg = teacher, cfg

    def teacher_log_probs(self, x, idx, epoch) -> torch.Tensor:
        return self.teacher.log_probs(x, self.cfg.temperature)

    def __call__(self, model, x, y, idx, epoch):
        logits = model(x)
        target = self.teacher_log_probs(x, idx, epoch)
        return logits, {
            "ce": self.cfg.alpha * F.cross_entropy(logits, y),
            "kd": (1 - self.cfg.alpha) * kd_loss(logits, target, self.cfg.temperature),
        }


def distill(data: Dataset, stage: StageConfig, teacher: Teacher, kd: KDConfig, *, seed: int = 0,
            device="cpu", run: Run | None = None, progress: bool = True, desc: str = "student"):
    """Train ``stage.model`` from scratch under ``teacher``; returns (student, last metrics)."""
    student = build_model(stage.model, data, seed)
    teacher.to(device)
    record = fit(student, KD(teacher, kd), data, stage, seed=seed, device=device, run=run,
                 progress=progress, desc=desc)
    if run is not None:
        run.mark("complete", final=record)
    return student, record
