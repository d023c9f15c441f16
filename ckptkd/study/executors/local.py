"""``--executor local`` (the default): this machine, one cell at a time or ``--jobs N`` processes.

Each cell writes its own folder under the study folder; the processes share the disk.
Under torchrun every rank runs each cell together (data-parallel), in this process.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import asdict
from pathlib import Path

import torch

from ...config import to_dict
from ...errors import CkptkdError
from ..cells import run_cell_from_dicts
from .base import Executor, register_executor


@register_executor("local")
class LocalExecutor(Executor):
    def __init__(self, jobs: int = 1, address: str | None = None):
        if address is not None:
            raise CkptkdError("--address names a Ray cluster; add --executor ray, or leave --address out")
        super().__init__(jobs, address)

    def run(self, todo, cfg, root: Path, device, tracker, run_in_process) -> None:
        if self.jobs <= 1 or len(todo) <= 1:
            for c in todo:
                tracker.started(c)
                run_in_process(c, cfg, root, device, root / "cache")
                tracker.done(c)
            return
        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        with cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_cell_from_dicts, {**asdict(c), "teachers": list(c.teachers)}, to_dict(cfg),
                                   str(root), device, str(root / "cache"), torch.get_num_threads()): c for c in todo}
            for c in todo:
                tracker.started(c)
            for f in cf.as_completed(futures):
                f.result()
                tracker.done(futures[f])
