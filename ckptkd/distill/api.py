"""``distill``: train a student under a teacher with the configured method (``kd.method``)."""
from __future__ import annotations

from .. import parallel
from ..config import KDConfig, StageConfig
from ..data import Dataset
from ..teacher import Teacher
from ..train import build_model, fit
from ..trajectory import Run
from .registry import build_method, check_method


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
