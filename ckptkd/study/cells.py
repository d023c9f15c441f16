"""A study cell: one training or one distillation with one seed, stored in its own folder.

A finished cell leaves ``result.json`` (written atomically, last), keyed by a hash of
everything that determines its outcome. A cell whose key matches is never run again, so
an interrupted study continues where it stopped and a grown grid only runs new cells.
Teachers and data enter the key by content (sha256), not by path or config spelling, so a
study folder can be moved or reached by another path without running anything again.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


from .. import parallel
from ..config import DataConfig, StageConfig, StudyConfig, from_dict
from ..data import Dataset, load_dataset
from ..distill.registry import method_key
from ..io import read_json, write_json
from ..trajectory import Run, open_checkpoint


@dataclass(frozen=True)
class Cell:
    id: str  # also its folder under STUDY/cells, e.g. "student/ckpt-0012/seed1"
    kind: str  # teacher | student
    seed: int
    group: str  # teacher | nokd | ckpt | ens-full | snapshot | average
    teachers: tuple[str, ...] = ()  # checkpoint files that teach (empty: no KD)
    combine: str = ""  # how an ensemble teacher combines members ("": the study's kd.combine)


def cell_key(cell: Cell, cfg: StudyConfig) -> str:
    """What decides the cell's outcome: the data by content (arrays, labels, splits) and the
    augmentation it resolves to, the stage, the KD settings and the teachers' weights.

    The KD settings are ``method_key``: the method's name and parameters (so students of kd
    and dkd never share a key), and for ``kd`` exactly the fields keyed before methods were
    registered, so the cells of existing studies stay finished."""
    stage = cfg.teacher if cell.kind == "teacher" else cfg.student
    data = _data(cfg.data)
    parts = {"cell": {k: v for k, v in asdict(cell).items() if k != "teachers"},
             "data": {"fingerprint": data.fingerprint, "view_seed": data.view_seed,
                      "augment": {k: getattr(data.augment, k) for k in ("shift", "flip", "noise")}},
             "stage": asdict(stage), "kd": method_key(cfg.kd) if cell.teachers else None,
             "teacher_sha256": [open_checkpoint(t).sha256 for t in cell.teachers], "format": 3}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def finished(cell: Cell, cfg: StudyConfig, root: Path) -> dict | None:
    folder = root / "cells" / cell.id
    if not (folder / "result.json").exists():
        return None
    result = read_json(folder / "result.json")
    return result if result.get("key") == cell_key(cell, cfg) else None


_DATA: dict[str, Dataset] = {}


def _data(cfg: DataConfig) -> Dataset:
    # one load per process: workers run many cells on the same data
    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg)
    return _DATA[key]


def provide_data(cfg: DataConfig, load) -> None:
    """Make ``_data(cfg)`` return ``load()``'s dataset in this process: a worker that has a file
    dataset's files elsewhere (``ckptkd.study.shipping``) loads them from there, while the cells
    still record ``cfg`` as the driver wrote it. ``load`` runs once per process."""
    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _DATA:
        _DATA[key] = load()


def run_cell(cell: Cell, cfg: StudyConfig, root: Path, device="cpu", cache_dir: Path | None = None,
             teacher_files: tuple[str, ...] | None = None) -> dict:
    """Train or distill this cell from scratch and write its result.json.

    ``teacher_files``: where this process reads ``cell.teachers`` (a worker's copies of the
    driver's files, same order); the run still records ``cell.teachers``, and the key, which
    takes teachers by content, is the same.
    """
    from ..distill import distill
    from ..teacher import Teacher, teacher_accuracy
    from ..train import train

    data = _data(cfg.data)
    folder = root / "cells" / cell.id
    stage: StageConfig = cfg.teacher if cell.kind == "teacher" else cfg.student
    if cell.kind == "student":  # students keep only their final weights
        stage = from_dict(StageConfig, {**asdict(stage), "save_every": 0})
    run = parallel.main_first(lambda: Run.create(
        folder, {"cell": asdict(cell), "study": cfg.name, "data": asdict(cfg.data)}, model=stage.model,
        num_classes=data.num_classes, in_shape=data.in_shape, data_fingerprint=data.fingerprint, kind=cell.kind,
        overwrite=True), then=lambda: Run(folder))
    t0 = time.perf_counter()
    readable = replace(cell, teachers=tuple(teacher_files)) if teacher_files is not None else cell
    result = {"cell": cell.id, "kind": cell.kind, "group": cell.group, "seed": cell.seed,
              "key": cell_key(readable, cfg)}
    if not cell.teachers:
        _, rec = train(data, stage, seed=cell.seed, device=device, run=run, progress=False, desc=cell.id)
    else:
        ckpts = [open_checkpoint(t) for t in readable.teachers]
        teacher = Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, cell.combine or cfg.kd.combine,
                                           fingerprint=data.fingerprint)
        _, rec = distill(data, stage, teacher, cfg.kd, seed=cell.seed, device=device, run=run, progress=False,
                         desc=cell.id, cache_dir=cache_dir)
        result["teacher_epochs"] = [c.epoch for c in ckpts]
        result["teacher_acc"] = teacher_accuracy(teacher, ckpts, data, device)
    result.update(acc=rec["test_acc"], loss=rec["test_loss"], train_acc=rec["train_acc"],
                  wall_s=time.perf_counter() - t0)
    parallel.on_main(lambda: write_json(folder / "result.json", result))
    return result


def run_cell_from_dicts(cell: dict, cfg: dict, root: str, device: str, cache_dir: str | None, threads: int) -> dict:
    """Entry point for worker processes (plain, picklable arguments)."""
    import torch

    torch.set_num_threads(threads)
    study = from_dict(StudyConfig, cfg)
    return run_cell(Cell(**{**cell, "teachers": tuple(cell["teachers"])}), study, Path(root), device,
                    Path(cache_dir) if cache_dir else None)
