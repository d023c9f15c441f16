"""Teachers: one checkpoint or an ensemble of checkpoints, and the KD target they give.

``combine_members`` is what a teacher-output cache stores (``ckptkd.teacher_cache``);
``target_log_probs`` turns it into the target at a temperature.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .ensemble import MODES as ENSEMBLE_MODES
from .ensemble import StackedEnsemble, loop_logits, use_vmap
from .errors import CkptkdError
from .io import sha256_bytes, sha256_file
from .train import evaluate
from .trajectory import Checkpoint, load_model


class Teacher(nn.Module):
    """One checkpoint or an ensemble of checkpoints, always in eval mode and without gradients.

    ``combine="logits"`` averages member logits (the official code's rule); ``"probs"``
    averages member probabilities at the distillation temperature.

    ``ensemble`` says how K members are evaluated: ``"loop"`` (one forward each),
    ``"vmap"`` (one vmapped pass over their stacked weights, see ``ckptkd.ensemble``) or
    ``"auto"`` (vmap on CUDA, the loop on CPU, where it measured faster).
    """

    def __init__(self, members: list[nn.Module], combine: str = "logits", ensemble: str = "auto"):
        super().__init__()
        if not members:
            raise CkptkdError("a teacher needs at least one checkpoint")
        if combine not in ("logits", "probs"):
            raise CkptkdError(f"combine must be logits or probs, got {combine!r}")
        if ensemble not in ENSEMBLE_MODES:
            raise CkptkdError(f"ensemble must be one of {', '.join(ENSEMBLE_MODES)}, got {ensemble!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.ensemble = ensemble
        self.checkpoint_identity: list[dict] | None = None  # set by from_checkpoints
        self._stacked: StackedEnsemble | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # a teacher's BatchNorm must never update its statistics

    def _apply(self, fn, *args, **kwargs):
        self._stacked = None  # .to(), .cuda(), .half(): the stacked copy is rebuilt on next use
        return super()._apply(fn, *args, **kwargs)

    @classmethod
    def from_checkpoints(cls, ckpts: list[Checkpoint], num_classes: int, in_shape, combine: str = "logits",
                         ensemble: str = "auto", fingerprint: str | None = None):
        """The teacher of ``ckpts``, for data of ``num_classes``, ``in_shape`` and ``fingerprint``
        (``Dataset.fingerprint``): a checkpoint trained on inputs of another shape is refused,
        one trained on other data of the same shape warned about (``check_trained_on``)."""
        teacher = cls([load_model(c, num_classes, in_shape, fingerprint) for c in ckpts], combine, ensemble)
        teacher.checkpoint_identity = [{"sha256": c.sha256 or sha256_file(c.path), "model": c.model} for c in ckpts]
        return teacher

    @property
    def identity(self) -> list[dict]:
        """Each member's weights sha256 and architecture, in member order: what a cache key
        needs to know about the teacher. Checkpoint files are named by their file hash;
        members given as modules are hashed from their weights."""
        if self.checkpoint_identity is not None:
            return self.checkpoint_identity
        return [{"sha256": weights_sha256(m), "model": type(m).__qualname__} for m in self.members]

    @torch.no_grad()
    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C) logits of the K members."""
        if self._stacked is None and use_vmap(self.ensemble, self.members, x.device):
            self._stacked = StackedEnsemble(self.members)
        return loop_logits(self.members, x) if self._stacked is None else self._stacked(x).float()

    def outputs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The combined output the KD target is a function of (see ``combine_members``)."""
        return combine_members(self.member_logits(x), temperature, self.combine)

    def log_probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return target_log_probs(self.outputs(x, temperature), temperature, self.combine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs(x)  # log-probabilities are valid logits for argmax and cross-entropy


def weights_sha256(module: nn.Module) -> str:
    """sha256 of a module's state_dict: names, dtypes, shapes and bytes."""
    parts = []
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        parts += [f"{name}:{t.dtype}:{tuple(t.shape)}".encode(), t.view(-1).view(torch.uint8).numpy().tobytes()]
    return sha256_bytes(b"\0".join(parts))


def combine_log_probs(member_logits: torch.Tensor, temperature: float, combine: str) -> torch.Tensor:
    """Log of the ensemble's distribution at ``temperature`` from (K, B, C) member logits."""
    return target_log_probs(combine_members(member_logits, temperature, combine), temperature, combine)


def combine_members(member_logits: torch.Tensor, temperature: float, combine: str) -> torch.Tensor:
    """(B, C) ensemble output from (K, B, C) member logits; what a teacher cache stores.

    ``"logits"``: the mean logits, from which the target at *any* temperature follows.
    ``"probs"``: log of the mean member probabilities at ``temperature`` (a cache of it is
    keyed by the temperature).
    """
    if combine == "logits":
        return member_logits.mean(0)
    k = member_logits.shape[0]
    return torch.logsumexp(F.log_softmax(member_logits / temperature, dim=-1), dim=0) - math.log(k)


def target_log_probs(combined: torch.Tensor, temperature: float, combine: str) -> torch.Tensor:
    """The KD target log p_t^T from ``combine_members``'s output."""
    return F.log_softmax(combined / temperature, dim=-1) if combine == "logits" else combined


def teacher_accuracy(teacher: Teacher, ckpts: list[Checkpoint], data: Dataset, device="cpu") -> float:
    """Test accuracy of ``teacher``: recorded with a single checkpoint, else evaluated."""
    if len(ckpts) == 1 and "test_acc" in ckpts[0].meta:
        return ckpts[0].meta["test_acc"]
    return evaluate(teacher, data.x_test, data.y_test, device=device)["acc"]
