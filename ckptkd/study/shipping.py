"""Cells without a shared disk: what a cell is sent, what it sends back, and how the driver writes it.

A worker on another machine cannot see the driver's study folder, and must not need to:

- it is sent the cell, the study config, the bytes of its teachers' checkpoints (weights and
  sidecar; through the engine's object store, once per checkpoint), and the data: a dataset
  it can regenerate (mnist1d, digits, blobs: a source without a path, or a
  ``module.path:function`` the worker can import) is regenerated there; a file dataset
  (npz, cifar10/100, imagefolder, webdataset) is read by the driver once, shipped once per
  node, and written to that node's temporary folder, once (``materialise_data``);
- it runs the cell in a temporary folder of its own and returns the run folder's files and
  the result (``run_shipped``);
- the driver alone writes them into ``STUDY/cells/<id>/`` (``install_cell``): staged beside
  the target, ``result.json`` last, renamed into place. The key and the files are those a
  local run writes (the run records the driver's teacher paths), so a cell finished on a
  worker is indistinguishable from one finished here, and resuming works the same.

Nothing here imports an engine: ``ckptkd.study.executors.ray`` moves these values.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from ..config import DataConfig, StudyConfig, from_dict, to_dict
from ..io import atomic_write, make_folder
from .cells import Cell, provide_data, run_cell

RESULT = "result.json"


# ---------------------------------------------------------------- the driver's side


def cell_spec(cell: Cell, cfg: StudyConfig, device: str, threads: int) -> dict:
    """Plain values that say which cell to run and how (the teachers travel on their own)."""
    return {"cell": {**asdict(cell), "teachers": list(cell.teachers)}, "cfg": to_dict(cfg), "device": device,
            "threads": threads, "fault": os.environ.get("CKPTKD_CELL_FAULT")}


def checkpoint_files(path: str | Path) -> dict:
    """A teacher checkpoint as bytes: its weights and, for ckptkd's safetensors, its sidecar."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    return {"name": path.name, "weights": path.read_bytes(),
            "sidecar": sidecar.read_bytes() if path.suffix == ".safetensors" and sidecar.exists() else None}


def shipped_data(cfg: DataConfig) -> dict | None:
    """None when a worker regenerates the data; else the files of a file dataset, with their sha256."""
    from ..data.registry import USER, resolve

    source, arg = resolve(cfg.spec)
    if source is USER or not source.arg:
        return None
    top = Path(arg)
    files = {p.relative_to(top).as_posix(): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()} \
        if top.is_dir() else {top.name: top.read_bytes()}
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return {"source": source.name, "is_dir": top.is_dir(), "name": top.name, "files": files, "sha256": h.hexdigest()}


def install_cell(root: Path, cell_id: str, shipped: dict) -> None:
    """Write a worker's cell folder into ``root/cells/<cell_id>``: all or nothing, result.json last."""
    target = root / "cells" / cell_id
    make_folder(target.parent)
    staging, aside = target.parent / f".{target.name}.incoming", target.parent / f".{target.name}.removing"
    for left in (staging, aside):  # left by a driver killed while installing
        shutil.rmtree(left, ignore_errors=True)
    files = shipped["files"]
    for rel in sorted(files, key=lambda r: r == RESULT):  # result.json, which marks the cell finished, last
        make_folder((staging / rel).parent)
        atomic_write(staging / rel, files[rel])
    if target.exists():  # an unfinished attempt, or a cell whose key changed: replaced, as run_cell does
        os.rename(target, aside)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------- the worker's side


def node_folder(name: str) -> Path:
    """A folder in this node's temporary directory, shared by the node's workers."""
    path = Path(tempfile.gettempdir()) / f"ckptkd-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def materialise_data(cfg: DataConfig, fetch) -> None:
    """Make this process's ``_data(cfg)`` load a file dataset from this node's copy of its files.

    ``fetch()`` returns ``shipped_data``'s dict; it is called only when this node has no copy
    yet (the copy is keyed by content, written beside its place and renamed in)."""
    def load():
        shipped = fetch()
        home = node_folder("data") / shipped["sha256"]
        if not home.exists():
            staging = Path(tempfile.mkdtemp(dir=home.parent, prefix=f".{home.name}."))
            for rel, data in shipped["files"].items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(data)
            try:
                os.rename(staging, home)
            except OSError:  # another worker of this node put it there first
                shutil.rmtree(staging, ignore_errors=True)
        local = home if shipped["is_dir"] else home / shipped["name"]
        from ..data import load_dataset

        return load_dataset(replace(cfg, spec=f"{shipped['source']}:{local}"))

    provide_data(cfg, load)


def run_shipped(spec: dict, teachers: list[dict]) -> dict:
    """Run one cell from ``cell_spec`` and ``checkpoint_files`` values in a temporary folder;
    return ``{"result": ..., "files": {relative path: bytes}}`` of its run folder."""
    import torch

    torch.set_num_threads(spec["threads"])
    cfg = from_dict(StudyConfig, spec["cfg"])
    cell = Cell(**{**spec["cell"], "teachers": tuple(spec["cell"]["teachers"])})
    with tempfile.TemporaryDirectory(prefix="ckptkd-cell-") as tmp:
        tmp = Path(tmp)
        readable = []
        for i, files in enumerate(teachers):
            folder = tmp / "teachers" / str(i) / "checkpoints"  # a run's layout: the sidecar beside the weights
            folder.mkdir(parents=True)
            (folder / files["name"]).write_bytes(files["weights"])
            if files["sidecar"] is not None:
                (folder / files["name"]).with_suffix(".json").write_bytes(files["sidecar"])
            readable.append(str(folder / files["name"]))
        _arm_fault(spec.get("fault"), cell.id)
        result = run_cell(cell, cfg, tmp / "study", spec["device"], node_folder("teacher-cache"), tuple(readable))
        made = tmp / "study" / "cells" / cell.id
        files = {p.relative_to(made).as_posix(): p.read_bytes() for p in sorted(made.rglob("*")) if p.is_file()}
    return {"result": result, "files": files}


def _arm_fault(fault: str | None, cell_id: str) -> None:
    """Crash tests: ``CKPTKD_CELL_FAULT=CELL_ID@MARKER`` (set on the driver) SIGKILLs the worker at
    the next checkpoint save of cell CELL_ID, mid-cell, unless MARKER (a file on the worker's
    machine) exists; it is created first, so the retry of the cell runs through."""
    if not fault or fault.rpartition("@")[0] != cell_id:
        return
    marker = Path(fault.rpartition("@")[2])
    if marker.exists():
        return
    marker.write_text(f"killed pid {os.getpid()} in cell {cell_id}\n")
    from ..trajectory import run as run_module

    os.environ["CKPTKD_FAULT"] = f"after-save:{run_module._saves + 1}"  # this process's next save point
