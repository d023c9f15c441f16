"""The main job, ``ckptkd run``: train a teacher with checkpoints, choose one, distill, compare.

    OUT/pipeline.json           the resolved config and, when done, the results table
    OUT/teacher/                the teacher's trajectory (a run folder)
    OUT/students/{nokd,full,chosen}/   one run folder per student

Every stage is a run folder, so ``--resume`` skips the stages that already finished.
Under torchrun every stage trains data-parallel; rank 0 alone writes files and analyses.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import parallel
from .config import RunConfig, StageConfig, to_dict
from .data import Dataset, load_dataset
from .distill import distill
from .errors import CkptkdError
from .export import Compression, compression
from .io import make_folder, occupied, read_json, write_json
from .models import create_model
from .select import SelectionContext, choose
from .teacher import Teacher, teacher_accuracy
from .train import resolve_device, train
from .trajectory import Checkpoint, Run, load_model
from .trajectory.run import config_hash


@dataclass
class Row:
    role: str  # "no KD", "full teacher", "chosen (policy)"
    teacher: str  # which checkpoints taught, e.g. "epoch 15" or "epochs 15+30"
    teacher_acc: float | None
    student_acc: float


def _train_stage(path: Path, config: dict, stage: StageConfig, data: Dataset, seed: int, device, resume: bool,
                 progress: bool, desc: str, teacher: Teacher | None = None, kd=None) -> Run:
    make = dict(model=stage.model, num_classes=data.num_classes, in_shape=data.in_shape,
                data_fingerprint=data.fingerprint)
    run = parallel.main_first(lambda: Run.create(path, config, resume=resume, **make), then=lambda: Run(path))
    if run.complete:
        return run
    if teacher is None:  # an interrupted stage continues from its last save point
        train(data, stage, seed=seed, device=device, run=run, progress=progress, desc=desc, resume=resume)
    else:
        distill(data, stage, teacher, kd, seed=seed, device=device, run=run, progress=progress, desc=desc,
                resume=resume)
    parallel.barrier(parallel.world())  # rank 0 has written the last checkpoint
    return Run(path)


def _open_out(out: Path, cfg: RunConfig, overwrite: bool, resume: bool) -> None:
    want = config_hash(to_dict(cfg))
    marker = out / "pipeline.json"
    if occupied(out):
        if not marker.exists() and (out / "manifest.json").exists():
            raise CkptkdError(f"output folder {str(out)!r} holds a single training run (ckptkd train or distill), "
                              "not the output of ckptkd run; choose another --out")
        if not marker.exists():
            raise CkptkdError(f"output folder {str(out)!r} is not empty and holds no ckptkd run; choose another --out")
        same = read_json(marker).get("config_sha256") == want
        if resume and not same:
            raise CkptkdError(f"{str(out)!r} holds a run with a different config; --resume needs the same config, "
                              "or pass --overwrite to replace it")
        if not resume and not overwrite:
            raise CkptkdError(f"output folder {str(out)!r} already holds a run; pass --resume to continue it, "
                              "--overwrite to replace it, or choose another --out")
        if overwrite and not resume:
            shutil.rmtree(out)
    make_folder(out)
    write_json(marker, {"config": to_dict(cfg), "config_sha256": want, "status": "running"})


def pick_teachers(cfg: RunConfig, teacher_run: Run, data: Dataset, device, progress: bool = True) -> list[Checkpoint]:
    """``cfg.select``'s checkpoints of the teacher's trajectory; the inputs the policy reads are
    cached in the teacher's run folder (rank 0 computes them, every rank gets the picks)."""
    return choose_with_verdict(cfg, teacher_run, data, device, progress)[0]


def check_selection_budget(cfg: RunConfig, data: Dataset) -> None:
    """Refuse a selection over ``select.budget`` before anything is trained. A policy's spend
    depends on how many candidates there are, not on their weights, so the checkpoints the
    teacher will save stand in for the real ones (``Policy.spend`` reads only their number)."""
    from .select import parse_policy
    from .select.budget import check_budget

    stage = cfg.teacher
    saves = sum(1 for e in range(1, stage.epochs + 1)
                if e == stage.epochs or (stage.save_every and e % stage.save_every == 0))  # as train.fit saves
    ctx = SelectionContext.from_config(data, None, select=cfg.select, info=cfg.info, student=cfg.student, kd=cfg.kd,
                                       seed=cfg.seed)
    check_budget(parse_policy(cfg.select.policy, k=cfg.select.k, epochs=cfg.select.checkpoints), [None] * saves, ctx)


def choose_with_verdict(cfg: RunConfig, teacher_run: Run, data: Dataset, device,
                        progress: bool = True) -> tuple[list[Checkpoint], dict, dict | None]:
    """(picks, recommendation, confidence): ``cfg.select``'s checkpoints, the verdict on
    distilling from them (``ckptkd.select.verdict``) within ``select.budget``, and the
    statement of confidence of a single policy's pick (None for a union or explicit)."""
    from .select import parse_policy
    from .select.budget import check_budget
    from .select.confidence import statement
    from .select.verdict import recommend

    ckpts = teacher_run.checkpoints()
    ctx = SelectionContext.from_config(data, teacher_run.path, select=cfg.select, info=cfg.info, student=cfg.student,
                                       kd=cfg.kd, seed=cfg.seed, device=device, progress=progress)
    sel = cfg.select

    def decide():
        parts = parse_policy(sel.policy, k=sel.k, epochs=sel.checkpoints)
        spend = check_budget(parts, ckpts, ctx)
        picks = choose(sel.policy, ckpts, ctx, k=sel.k, min_spacing=sel.min_spacing, epochs=sel.checkpoints)
        conf = statement(sel.policy, ckpts, picks, ctx) if len(parts) == 1 and parts[0] != "explicit" else None
        return [c.epoch for c in picks], recommend(picks, ctx, spent=spend.distillations, parts=parts), conf

    epochs, verdict, conf = parallel.main_only(decide)
    return [c for c in ckpts if c.epoch in epochs], verdict, conf


def run_pipeline(cfg: RunConfig, out: str | Path, *, overwrite: bool = False, resume: bool = False,
                 progress: bool = True, say=None) -> list[Row]:
    """Run the main job into ``out`` and return the results table; ``say`` prints the augmentation."""
    out = Path(out)
    data = load_dataset(cfg.data)
    device = resolve_device(cfg.device)
    for spec in (cfg.teacher.model, cfg.student.model):  # a bad model spec fails before OUT exists
        create_model(spec, data.num_classes, data.in_shape)
    check_selection_budget(cfg, data)  # before the teacher trains: raising --budget later would retrain it
    if say is not None:
        say(data.augment_line)
    parallel.main_first(lambda: _open_out(out, cfg, overwrite, resume), then=lambda: None)
    conf = to_dict(cfg)
    progress = progress and parallel.world().is_main

    teacher_run = _train_stage(out / "teacher", {"stage": "teacher", **conf}, cfg.teacher, data, cfg.seed,
                               device, resume, progress, "teacher")
    full = teacher_run.checkpoints()[-1]
    chosen, verdict, confidence = choose_with_verdict(cfg, teacher_run, data, device, progress)

    def label(ckpts: list[Checkpoint]) -> str:
        return ("epoch " if len(ckpts) == 1 else "epochs ") + "+".join(str(c.epoch) for c in ckpts)

    def row(role: str, name: str, ckpts: list[Checkpoint] | None) -> Row:
        """Train (or, resuming, reuse) the student ``name`` under ``ckpts`` (None: no KD)."""
        teacher = None if ckpts is None else Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape,
                                                                      cfg.kd.combine, fingerprint=data.fingerprint)
        stage_conf = {"stage": name, "teachers": [c.epoch for c in ckpts or []], **conf}
        run = _train_stage(out / "students" / name, stage_conf, cfg.student, data, cfg.seed + 1, device,
                           resume, progress, f"student ({name})", teacher, cfg.kd)
        t_acc = None if ckpts is None else teacher_accuracy(teacher, ckpts, data, device)
        return Row(role, "-" if ckpts is None else label(ckpts), t_acc, run.manifest["final"]["test_acc"])

    rows = [row("no KD", "nokd", None), row("full teacher", "full", [full])]
    chosen_role = f"chosen ({cfg.select.policy})"
    if [c.epoch for c in chosen] == [full.epoch]:  # the full teacher's student already exists
        rows.append(Row(chosen_role, label(chosen), rows[1].teacher_acc, rows[1].student_acc))
    else:
        rows.append(row(chosen_role, "chosen", chosen))
    student_run = Run(out / "students" / ("full" if [c.epoch for c in chosen] == [full.epoch] else "chosen"))
    parallel.on_main(lambda: write_json(out / "pipeline.json", {
        "config": conf, "config_sha256": config_hash(conf), "status": "complete", "rows": [r.__dict__ for r in rows],
        "recommendation": verdict, "confidence": confidence,
        "compression": asdict(measure_compression(student_run, chosen, data, f"{cfg.teacher.model} ({label(chosen)})",
                                                  cfg.kd.combine))}))
    return rows


def measure_compression(student_run: Run, teachers: list[Checkpoint], data: Dataset, teacher_name: str,
                        combine: str = "logits") -> Compression:
    """The final student of ``student_run`` beside the teacher it learned from, timed in this process."""
    student = load_model(student_run.checkpoints()[-1], data.num_classes, data.in_shape)
    teacher = Teacher.from_checkpoints(teachers, data.num_classes, data.in_shape, combine)
    return compression(student, student_run.model, teacher, teacher_name, data.in_shape)


def verdict_lines(out: str | Path) -> list[str]:
    """The confidence of the pick and the verdict on distilling, as ``ckptkd run`` prints them."""
    done = read_json(Path(out) / "pipeline.json")
    lines = [f"confidence: {done['confidence']['statement']}"] if done.get("confidence") else []
    verdict = done.get("recommendation")
    return lines + ([f"verdict: {verdict['reason']}"] if verdict else [])


def compression_line(out: str | Path) -> str:
    """The compression line of the finished job in ``out``, as ``ckptkd run`` prints it last."""
    return Compression(**read_json(Path(out) / "pipeline.json")["compression"]).line()


def format_table(rows: list[Row]) -> str:
    head = f"{'role':<22} {'teacher':<16} {'teacher acc':>11} {'student acc':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t_acc = "-" if r.teacher_acc is None else f"{100 * r.teacher_acc:.2f}"
        lines.append(f"{r.role:<22} {r.teacher:<16} {t_acc:>11} {100 * r.student_acc:>11.2f}")
    return "\n".join(lines)
