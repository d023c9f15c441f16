"""Method ``fitnet``: FitNets hints, Romero, Ballas, Kahou, Chassang, Gatta & Bengio,
"FitNets: Hints for Thin Deep Nets", ICLR 2015 (arXiv:1412.6550), in its penultimate-feature
form, trained in one stage as in mdistiller's ``distillers/FitNet.py``.

FitNets regress a teacher's intermediate "hint" layer from the student's "guided" layer
through a learned regressor r: L_hint = 1/2 ||F_t - r(F_s)||^2. Here the hint is the
penultimate feature vector that every ckptkd model exposes through timm's feature API,
F = forward_head(forward_features(x), pre_logits=True) (``ckptkd.models.base``), so any
teacher/student pair of widths d_t, d_s works with r a Linear(d_s, d_t) on the student.
The paper trains the hint first and then the whole student with KD; like the official
single-stage distiller this trains both at once:

    loss = ce_weight * CE(s, y) + weight * mean_{samples, features} (r(F_s) - F_t)^2

Parameters: ``kd.fitnet.ce_weight`` and ``kd.fitnet.weight``; ``kd.temperature``,
``kd.alpha`` and ``kd.combine`` are not read.

Decisions (docs/distillation.md):
- The teacher's features are not cached: the teacher runs forward (eval mode, no gradient)
  on every batch. The teacher cache stores the combined outputs a logit target is a
  function of, keyed and spot-checked as such; features are another quantity (d_t values
  per view and sample instead of C, e.g. 64x the file for a 64-wide cnn1d_l on 10 classes)
  and would need an entry kind of their own. A study's many fitnet students each pay the
  teacher's forward; ``uses_cache = False`` keeps ``distill`` from building an unused entry.
- One teacher only: an ensemble is refused. Members of an ensemble (independent runs, or
  checkpoints of one trajectory) have unrelated feature spaces, so an average of their
  features is no teacher's representation; per-member regressors would be another method.
- A teacher or student without ``forward_features``/``forward_head`` (a torchvision or
  module:function model) is refused with one line naming it.
- Not under torchrun: the student's features are read through its own methods, past the
  DistributedDataParallel wrapper, whose gradient synchronisation needs its forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import parallel
from ..errors import CkptkdError
from .registry import Method, register_method


def feature_width(model: nn.Module, role: str, in_shape, name: str | None = None) -> int:
    """Width of ``model``'s penultimate features; a one-line refusal naming the model (``name``,
    else its class) when it has no feature API."""
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise CkptkdError(f"kd.method fitnet needs the {role}'s penultimate features, but the {role} model "
                          f"{name or type(model).__name__!r} has no forward_features/forward_head; use a ckptkd model "
                          "(`ckptkd models`) or a logit method (kd, dkd)")
    width = getattr(model, "num_features", None)
    if isinstance(width, int):
        return width
    was_training = model.training
    model.eval()
    with torch.no_grad():  # a model that does not say its width: one probe forward
        probe = torch.zeros(2, *in_shape, device=next(model.parameters()).device)
        width = model.forward_head(model.forward_features(probe), pre_logits=True).shape[1]
    model.train(was_training)
    return int(width)


def features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, logits) of ``model`` on ``x``, in one forward."""
    f = model.forward_features(x)
    return model.forward_head(f, pre_logits=True), model.forward_head(f)


@register_method
class FitNet(Method):
    """FitNets hints on the penultimate features: returns ``{"ce": ..., "hint": ...}``, weighted."""

    name = "fitnet"
    summary = "FitNets hints (Romero et al. 2015) on penultimate features: CE + weight * MSE(r(F_s), F_t)"
    uses_cache = False
    single_teacher = True
    needs_features = True
    shared = ()

    @classmethod
    def check_models(cls, teachers: dict[str, nn.Module], students: dict[str, nn.Module], in_shape) -> None:
        for role, models in (("teacher", teachers), ("student", students)):
            for name, model in models.items():
                feature_width(model, role, in_shape, name)

    @classmethod
    def check(cls, cfg) -> None:
        for key in ("ce_weight", "weight"):
            if getattr(cfg.fitnet, key) < 0:
                raise CkptkdError(f"kd.fitnet.{key} must be >= 0, got {getattr(cfg.fitnet, key)}")

    def __init__(self, teacher, cfg, cache=None, *, student: nn.Module | None = None, data=None):
        super().__init__(teacher, cfg, None)
        if student is None or data is None:
            raise CkptkdError("kd.method fitnet needs the student and the data to size its regressor")
        if parallel.world().distributed:
            raise CkptkdError("kd.method fitnet does not run under torchrun yet; run it in one process")
        if len(teacher.members) != 1:
            raise CkptkdError(f"kd.method fitnet learns from one teacher's features, got an ensemble of "
                              f"{len(teacher.members)} checkpoints; use one checkpoint, or kd or dkd")
        names = [m.get("model") or f"member {i}" for i, m in enumerate(teacher.identity)]
        self.check_models(dict(zip(names, teacher.members)), {type(student).__name__: student}, data.in_shape)
        self.hint = teacher.members[0]
        d_t = feature_width(self.hint, "teacher", data.in_shape)
        d_s = feature_width(student, "student", data.in_shape)
        self.extra = nn.Linear(d_s, d_t)  # the regressor r; initialised from the seeded global RNG

    def __call__(self, model, x, y, idx, epoch):
        f_s, logits = features(model, x)
        with torch.no_grad():
            f_t, _ = features(self.hint, x)
        hint = F.mse_loss(self.extra(f_s).float(), f_t.float())
        return logits, {"ce": self.cfg.fitnet.ce_weight * F.cross_entropy(logits, y),
                        "hint": self.cfg.fitnet.weight * hint}
