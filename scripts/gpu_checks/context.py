"""The context every check runs in, and ckptkd's CLI called in this process."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ckptkd import DataConfig, Run, StageConfig, load_dataset, train
from ckptkd.config import to_dict

from .common import BATCH, REPO, Profile, synthetic_images


class Context:
    """Device, sizes, work folder and lazily built shared things (data sets, the CPU teacher)."""

    def __init__(self, args, device: torch.device, profile: Profile, work: Path):
        self.args, self.device, self.p, self.work = args, device, profile, work
        self.deadline = time.monotonic() + args.time_limit
        self._memo: dict = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def memo(self, key, make):
        """``make()`` once; a failure is kept too, so the checks that share it fail alike, at once."""
        if key not in self._memo:
            try:
                self._memo[key] = make()
            except Exception as e:  # noqa: BLE001 - re-raised to every caller
                self._memo[key] = e
        if isinstance(self._memo[key], Exception):
            raise self._memo[key]
        return self._memo[key]

    def spec(self, name: str) -> str:
        """The dataset spec of synthetic set ``name``, written to the work folder on first use:
        small (checks 1, 2), bench (compile, check 3), c100 (check 4)."""
        p = self.p
        n_train, n_test, classes, seed = {"small": (p.n_train, p.n_test, 10, 0),
                                          "bench": (p.bench_n_train, p.bench_n_test, 10, 1),
                                          "c100": (p.paper_n_train, p.paper_n_test, 100, 2)}[name]

        def make():
            path = self.work / f"{name}.npz"
            np.savez(path, **synthetic_images(n_train, n_test, classes, seed))
            return f"npz:{path}"
        return self.memo(("spec", name), make)

    def data(self, name: str):
        return self.memo(("data", name), lambda: load_dataset(DataConfig(spec=self.spec(name))))

    def teacher_run(self) -> Run:
        """The small teacher of checks 1 and 2, trained on CPU, a checkpoint every epoch."""
        def make():
            data, p = self.data("small"), self.p
            stage = StageConfig(model=p.teacher, epochs=p.teacher_epochs, batch_size=BATCH, save_every=1)
            run = Run.create(self.work / "teacher", {"data": {"spec": self.spec("small")},
                                                     "train": to_dict(stage)},
                             model=p.teacher, num_classes=data.num_classes, in_shape=data.in_shape,
                             data_fingerprint=data.fingerprint)
            t0 = time.perf_counter()
            train(data, stage, seed=0, device="cpu", run=run, progress=False)
            self._memo["teacher_train_s"] = time.perf_counter() - t0
            return Run(run.path)
        return self.memo("teacher_run", make)

    def ensemble_ckpts(self):
        return self.teacher_run().checkpoints()[-4:]

    def env(self) -> dict:
        """Subprocess environment: this repository's ckptkd first."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path}

    def subprocess(self, cmd: list[str]) -> subprocess.CompletedProcess:
        limit = max(30.0, min(600.0, self.remaining() + 30))
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=limit, cwd=self.work)
        if proc.returncode != 0:
            lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
            # torchrun ends with its own summary: name the child's exception, and keep the tail
            errors = [line for line in lines if "Error" in line or "error:" in line]
            tail = "\n".join(lines[-25:])
            raise RuntimeError(f"{' '.join(cmd[1:4])} ... exited {proc.returncode}: "
                               f"{(errors or lines)[-1].strip()}\n{tail}")
        return proc


def cli(*argv: str) -> str:
    """``ckptkd ARGV`` in this process; its stdout, or RuntimeError with its error line."""
    from ckptkd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    if rc != 0:
        raise RuntimeError(f"ckptkd {argv[0]} exited {rc}: {(err.getvalue().strip() or 'no output').splitlines()[-1]}")
    return out.getvalue()
