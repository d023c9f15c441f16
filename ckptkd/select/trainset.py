"""The teacher's outputs on its own training inputs: a cached selection input.

The student learns from the teacher's outputs on the *training* inputs, and that is where a
teacher that memorises flipped labels does its harm (issue 19; docs/selection.md). Policies
that read the training set and the trajectory (``aum-fit``, ``cl-fit``, ``label-wave`` in
``ckptkd/select/policies/``) read one forward pass of every checkpoint over the un-augmented
training split, kept here.

Cache (with ``folder``)
    FOLDER/train-outputs/<key>.safetensors   the logits (float32, N x C) of one checkpoint,
                                             with the wall time and the epoch as metadata

The key is the sha256 of the checkpoint's weights sha256 and architecture, the data
fingerprint, a hash of the training labels and the settings; nothing else in the folder is
read or written, so this pass cannot change a cached teacher output, student or another
policy's record. The tensors live in safetensors files, not in JSON: a training split of
45,000 samples and 100 classes is 18 MB per checkpoint.

It reads ``data.x_train`` and ``data.y_train`` only: never the validation or the test split.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from ..data import Dataset
from ..errors import CkptkdError
from ..io import atomic_write, sha256_file
from ..trajectory import Checkpoint, load_model

FOLDER_NAME = "train-outputs"
VERSION = 1  # a change to what is stored gets a new key, never a silently different record


def labels_sha256(y: torch.Tensor) -> str:
    return hashlib.sha256(y.to(torch.int64).numpy().tobytes()).hexdigest()


def train_key(ckpt: Checkpoint, data: Dataset) -> str:
    sha = ckpt.sha256 or sha256_file(ckpt.path)
    settings = {"what": "logits", "augment": "none", "n_train": len(data.y_train), "version": VERSION,
                "labels": labels_sha256(data.y_train)}
    blob = json.dumps(["train-outputs", sha, ckpt.model, data.fingerprint, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def compute_train_logits(ckpt: Checkpoint, data: Dataset, device="cpu") -> torch.Tensor:
    """One forward pass of ``ckpt`` over the training inputs, without augmentation or gradients."""
    from ..info.analyze import extract

    if len(data.y_train) == 0:
        raise CkptkdError("the training split is empty; the training-set policies have nothing to read")
    model = load_model(ckpt, data.num_classes, data.in_shape)
    with torch.no_grad():
        _, logits = extract(model, data.x_train, "logits", device=device)
    return logits.float()


class TrainOutputs:
    """``get(ckpt)`` -> {"logits": (N, C) float32, "wall_s", "epoch"}, computed once per key
    and kept in ``folder`` (or in memory without one)."""

    def __init__(self, data: Dataset, folder: str | Path | None = None, device="cpu"):
        self.data, self.device = data, device
        self.folder = Path(folder) / FOLDER_NAME if folder is not None else None
        self._memory: dict[str, dict] = {}

    def get(self, ckpt: Checkpoint) -> dict:
        key = train_key(ckpt, self.data)
        if key in self._memory:
            return self._memory[key]
        record = self._read(key)
        if record is None:
            t0 = time.perf_counter()
            logits = compute_train_logits(ckpt, self.data, self.device)
            record = {"logits": logits, "wall_s": time.perf_counter() - t0, "epoch": ckpt.epoch}
            self._write(key, record)
        self._memory[key] = record
        return record

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.safetensors"

    def _read(self, key: str) -> dict | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta, logits = f.metadata() or {}, f.get_tensor("logits")
            if logits.shape != (len(self.data.y_train), self.data.num_classes):
                return None  # not this data's: computed again (a lost speed-up, not an error)
            return {"logits": logits, "wall_s": float(meta["wall_s"]), "epoch": int(meta["epoch"])}
        except (OSError, KeyError, ValueError, SafetensorError):  # damaged: computed again
            return None

    def _write(self, key: str, record: dict) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"wall_s": repr(record["wall_s"]), "epoch": str(record["epoch"])}
        atomic_write(path, save_safetensors({"logits": record["logits"].contiguous()}, metadata=meta))


MIN_CHECKPOINTS = 3  # a trajectory signal compares an early stretch with later checkpoints


def require_trajectory(ckpts, who: str, at_least: int = MIN_CHECKPOINTS) -> None:
    """Refuse a trajectory too short for a trajectory signal, rather than pick silently."""
    if len(ckpts) < at_least:
        raise CkptkdError(f"{who} reads the trajectory and needs at least {at_least} checkpoints, got {len(ckpts)}; "
                          "save more often (a smaller save_every) or use a policy that scores single checkpoints "
                          "(e.g. val-nll-1se)")


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, the assigned label's logit minus the largest other logit (Pleiss et al. 2020)."""
    z = logits.double()
    assigned = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf")).max(1).values
    return assigned - others


def label_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, the probability the checkpoint gives its assigned (possibly noisy) label."""
    return torch.softmax(logits.double(), 1).gather(1, y[:, None]).squeeze(1)


def one_se_scores(per_sample: list[torch.Tensor]) -> list[float]:
    """The one-standard-error rule over paired per-sample values (higher = better), as in
    ``val-nll-1se``: with d the mean of (best - this) and SE its standard error over the
    samples, the score is -max(0, d - SE); every checkpoint within one SE of the best scores 0
    and ``top_k`` gives ties to the later one."""
    import math

    means = [float(v.mean()) for v in per_sample]
    best = per_sample[max(range(len(means)), key=lambda i: means[i])]
    out = []
    for v in per_sample:
        d = best - v
        se = float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        out.append(-max(0.0, float(d.mean()) - se))
    return out
