"""``distill``: train a student under a teacher with the configured method (``kd.method``)."""
from __future__ import annotations

import torch

from .. import parallel
from ..config import KDConfig, StageConfig
from ..data import Dataset
from ..errors import CkptkdError
from ..teacher import Teacher
from ..train import build_model, fit
from ..trajectory import Run
from .registry import build_method, check_method


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
    """Train ``stage.model`` from scratch under ``teacher`` with ``kd.method``; returns
    (student, last metrics).

    With ``cache_dir``, the teacher's outputs for ``stage.epochs`` epochs of views are
    computed once into that folder (or found there from an earlier student of the same
    teacher and data) and read instead of running the teacher on every batch, for every
    method that reads only the teacher's target (``Method.uses_cache``). The student is the
    same as without the cache.
    """
    method_cls = check_method(kd, teachers=len(teacher.members))
    student = build_model(stage.model, data, seed)
    device = parallel.world().device(device)
    teacher.to(device)
    check_teacher_classes(teacher, data, device)
    cache = None
    if cache_dir is not None and method_cls.uses_cache:
        from ..teacher_cache import TeacherCache

        cache = parallel.main_first(lambda: TeacherCache.build(
            cache_dir, teacher, data, kd.temperature, views=stage.epochs, device=device,
            progress=progress and parallel.world().is_main))
    method = build_method(kd, teacher, cache, student=student, data=data)
    record = fit(student, method, data, stage, seed=seed, device=device, run=run,
                 progress=progress, desc=desc, resume=resume)
    if run is not None and parallel.world().is_main:
        run.mark("complete", final=record)
    return student, record
