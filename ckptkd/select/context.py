"""What policies read, built lazily and cached on disk: analyses, val metrics, proxy students.

A context never reads the test split: selection reads the training and validation splits
alone, so the test accuracy that reports the chosen teacher's student is an honest one
(tests/test_select.py poisons the test split to check it).

Cache (with ``folder``)
    FOLDER/analysis-cache.json    information estimates (``ckptkd.info.analyze``), per checkpoint
    FOLDER/selection-cache.json   {key: record}: ``val`` metrics and ``proxy`` results per checkpoint
    FOLDER/teacher-cache/         the proxy students' teacher outputs (``ckptkd.teacher_cache``)
    FOLDER/train-outputs/         every checkpoint's logits on the training split (``ckptkd.select.trainset``)
    FOLDER/knn-neighbours/        the validation inputs' nearest training inputs (policy ``knn-student``)

A key is the sha256 of the checkpoint's weights sha256 and architecture, the data
fingerprint (which covers the validation split) and every setting the record depends on.
Every record keeps the ``wall_s`` its computation took, so a policy's cost is the same
whether it was computed now or read back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import InfoConfig, KDConfig, ProxyConfig, SelectConfig, StageConfig
from ..data import Dataset
from ..distill.registry import method_key
from ..errors import CkptkdError
from ..io import read_json, sha256_file, write_json
from ..trajectory import Checkpoint, load_model

CACHE_NAME = "selection-cache.json"


class SelectionContext:
    """The data (train and val; never test), the device, the cache ``folder``, the analysis
    settings ``info``, the ``student``/``kd`` and ``proxy`` settings of policy ``proxy``
    (whose student is initialised with ``seed + proxy.seed``), and the ``budget`` in full
    distillations that the policies and the verdict may spend (``ckptkd.select.budget``);
    ``budget_key`` names where that budget is set, for the refusal of a policy over it."""

    def __init__(self, data: Dataset, *, device="cpu", folder: str | Path | None = None,
                 info: InfoConfig = InfoConfig(), student: StageConfig | None = None, kd: KDConfig | None = None,
                 proxy: ProxyConfig = ProxyConfig(), progress: bool = False, seed: int = 0, budget: float = 1.0,
                 budget_key: str = "select.budget"):
        from .budget import check_budget_value
        from .trainset import TrainOutputs

        self.data, self.device, self.info = data, device, info
        self.folder = Path(folder) if folder is not None else None
        self.student, self.kd, self.proxy_cfg = student, kd, proxy
        self.progress, self.seed = progress, seed
        self.budget, self.budget_key = check_budget_value(budget, "budget"), budget_key
        self._memory: dict[str, dict] = {}  # the cache when there is no folder
        self._analyses: dict[str, list[dict]] = {}
        self._train = TrainOutputs(data, self.folder, device)

    @classmethod
    def from_config(cls, data: Dataset, folder: str | Path | None, *, select: SelectConfig | None = None,
                    info: InfoConfig | None = None, student: StageConfig | None = None, kd: KDConfig | None = None,
                    seed: int = 0, device="cpu", progress: bool = False,
                    budget_key: str = "select.budget") -> "SelectionContext":
        """The one place a selection is put together, from config sections: the pipeline
        (``cfg.select``, ``cfg.info``, ...), ``ckptkd select`` (its flags and --config) and a
        study (``ckptkd.study.runner.selection_context``) all call it. A new selection input
        is a field of ``SelectConfig`` (or a section of its own) read here, once.

        ``student``/``kd`` None: no proxy student can be trained (policy proxy refuses, naming
        the flags that give one); ``seed`` is the run's seed (a proxy student starts from
        ``seed + select.proxy.seed``); ``select.budget`` is what the policies and the verdict
        may spend, in full distillations (``ckptkd.select.budget``), and ``budget_key`` where the
        user sets it (a study: its top-level ``budget``)."""
        select = select or SelectConfig()
        return SelectionContext(data, device=device, folder=folder, info=info or InfoConfig(), student=student,
                                kd=kd, proxy=select.proxy, progress=progress, seed=seed, budget=select.budget,
                                budget_key=budget_key)

    # ------------------------------------------------------------ inputs

    def require_val(self, who: str) -> None:
        """Refuse, naming ``who`` (e.g. "policy best-val"), when there is no validation split."""
        if len(self.data.y_val) == 0:
            raise CkptkdError(f"{who} needs a validation split; set data.val_fraction > 0 (e.g. 0.1)")

    def analysis(self, ckpts: Sequence[Checkpoint], info: InfoConfig | None = None, *,
                 split: str = "train") -> list[dict]:
        """``ckptkd.info.analyze.analyze`` rows of ``ckpts`` on a probe from ``split``."""
        from ..info.analyze import analyze

        info = info or self.info
        memo = json.dumps([[c.path.as_posix() for c in ckpts], dataclasses.asdict(info), split], sort_keys=True)
        if memo not in self._analyses:
            self._analyses[memo] = analyze(list(ckpts), self.data, info, folder=self.folder, device=self.device,
                                           progress=self.progress, split=split)
        return self._analyses[memo]

    def val_metrics(self, ckpt: Checkpoint) -> dict:
        """The teacher on the validation split: ``val_acc``, ``val_nll`` (at T=1), and
        ``val_nll_ts`` at the ``temperature`` fitted on the same split (Guo et al. 2017)."""
        from ..info.analyze import extract
        from .temperature import fit_temperature, nll

        def compute() -> dict:
            model = load_model(ckpt, self.data.num_classes, self.data.in_shape)
            _, logits = extract(model, self.data.x_val, "logits", device=self.device)
            y = self.data.y_val
            t, nll_ts = fit_temperature(logits, y)
            per_sample = F.cross_entropy(logits.double() / t, y, reduction="none")
            return {"val_acc": float((logits.argmax(1) == y).double().mean()), "val_nll": nll(logits, y),
                    "val_nll_ts": nll_ts, "temperature": t, "nll_ts_samples": per_sample.tolist()}

        # "samples": records before the per-sample NLLs were kept are computed again (one val pass)
        return self._cached("val", ckpt, {"n_val": len(self.data.y_val), "samples": True}, compute)

    def val_nll_at(self, ckpt: Checkpoint, temperature: float) -> dict:
        """The teacher's per-sample validation NLLs of softmax(z / ``temperature``) without any
        fitting (``nll_samples``, ``val_nll``): at the KD temperature, the distribution the
        student is taught, judged on held-out labels."""
        from ..info.analyze import extract

        def compute() -> dict:
            model = load_model(ckpt, self.data.num_classes, self.data.in_shape)
            _, logits = extract(model, self.data.x_val, "logits", device=self.device)
            per_sample = F.cross_entropy(logits.double() / temperature, self.data.y_val, reduction="none")
            return {"val_nll": float(per_sample.mean()), "nll_samples": per_sample.tolist()}

        return self._cached("val-at-T", ckpt, {"n_val": len(self.data.y_val), "temperature": float(temperature)},
                            compute)

    def kd_temperature(self) -> float:
        """The temperature the student will be distilled at (``kd.temperature``, default KDConfig's)."""
        return float((self.kd or KDConfig()).temperature)

    def train_outputs(self, ckpt: Checkpoint) -> dict:
        """``ckpt``'s logits on the un-augmented training split (``logits``, N x C float32) and
        the ``wall_s`` the pass took; cached in FOLDER/train-outputs/ (``ckptkd.select.trainset``).
        Reads the training split only, so it works without a validation split."""
        return self._train.get(ckpt)

    def proxy(self, ckpt: Checkpoint, cfg: ProxyConfig | None = None, who: str = "policy proxy") -> dict:
        """A short distillation from ``ckpt`` under ``cfg`` (default: the context's
        ``ProxyConfig``): the proxy student's ``val_acc``. ``who`` names the policy in errors."""
        from .. import parallel

        proxy_cfg = cfg or self.proxy_cfg
        if self.student is None:
            raise CkptkdError(f"{who} needs the student's training settings: a student section in --config, "
                              "or --student-model (SelectionContext(student=...) in Python)")
        if parallel.world().distributed:
            raise CkptkdError(f"{who} does not run under torchrun; run the selection in one process")
        stage = proxy_stage(self.student, proxy_cfg)
        kd = self.kd or KDConfig()
        settings = {"stage": dataclasses.asdict(stage), "kd": method_key(kd),
                    "proxy": dataclasses.asdict(proxy_cfg), "seed": self.seed}

        def compute() -> dict:
            from ..distill import distill
            from ..teacher import Teacher

            data = proxy_data(self.data, proxy_cfg)
            teacher = Teacher.from_checkpoints([ckpt], data.num_classes, data.in_shape, kd.combine)
            cache_dir = self.folder / "teacher-cache" if self.folder is not None else None
            _, rec = distill(data, stage, teacher, kd, seed=self.seed + proxy_cfg.seed, device=self.device, run=None,
                             progress=False, cache_dir=cache_dir)
            return {"val_acc": rec["val_acc"], "val_loss": rec["val_loss"], "model": stage.model,
                    "epochs": stage.epochs, "n_train": len(data.y_train)}

        return self._cached("proxy", ckpt, settings, compute)

    # ------------------------------------------------------------ the cache

    def _cached(self, kind: str, ckpt: Checkpoint, settings: dict, compute: Callable[[], dict]) -> dict:
        sha = ckpt.sha256 or sha256_file(ckpt.path)
        return self.cached_record(kind, [sha, ckpt.model], settings, compute, epoch=ckpt.epoch)

    def cached_record(self, kind: str, identity: list, settings: dict, compute: Callable[[], dict],
                      epoch: int | None = None) -> dict:
        """The record ``compute()`` makes, kept in FOLDER/selection-cache.json under the sha256 of
        ``kind``, ``identity`` (what is scored: a checkpoint's sha256 and architecture, or a
        teacher-free description), the data fingerprint and ``settings``."""
        blob = json.dumps([kind, *identity, self.data.fingerprint, settings], sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()
        cache = self._read()
        if key not in cache:
            self.require_val(f"selection input {kind!r}")
            t0 = time.perf_counter()
            record = compute()
            cache = self._read()  # another context may have written meanwhile; keep its records
            cache[key] = {**record, "kind": kind, "epoch": epoch, "wall_s": time.perf_counter() - t0}
            self._write(cache)
        return cache[key]

    def _read(self) -> dict:
        if self.folder is None:
            return self._memory
        try:
            return read_json(self.folder / CACHE_NAME)
        except (CkptkdError, FileNotFoundError):
            return {}  # absent or damaged: only a lost speed-up

    def _write(self, cache: dict) -> None:
        if self.folder is None:
            self._memory = cache
        else:
            write_json(self.folder / CACHE_NAME, cache)


def proxy_stage(student: StageConfig, cfg: ProxyConfig) -> StageConfig:
    """The student's stage shortened to ``epoch_fraction`` of its epochs (milestones scaled alike)."""
    epochs = max(1, round(cfg.epoch_fraction * student.epochs))
    milestones = sorted({max(1, round(m * epochs / student.epochs)) for m in student.milestones})
    return dataclasses.replace(student, model=cfg.model or student.model, epochs=epochs, milestones=milestones,
                               save_every=0, compile=False)


def proxy_data(data: Dataset, cfg: ProxyConfig) -> Dataset:
    """What a proxy student trains on: ``data_fraction`` of the training split (class-stratified,
    seeded), the same validation split, and no test split at all."""
    from ..info.analyze import probe_indices

    x, y, fp = data.x_train, data.y_train, data.fingerprint
    if cfg.data_fraction < 1:
        idx = probe_indices(y, max(2, round(cfg.data_fraction * len(y))), cfg.seed)
        x, y = x[idx], y[idx]
        fp = hashlib.sha256(f"{fp}/subset/{cfg.data_fraction}/{cfg.seed}".encode()).hexdigest()
    empty = data.x_val[:0]
    return dataclasses.replace(data, x_train=x, y_train=y, x_test=empty, y_test=torch.empty(0, dtype=torch.int64),
                               fingerprint=fp)
