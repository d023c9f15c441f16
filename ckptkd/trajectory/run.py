"""A run folder: the trajectory of one training, one checkpoint per save point.

    RUN/config.yaml           the exact resolved config
    RUN/manifest.json         what the run is (model, classes, data fingerprint) and its status
    RUN/metrics.jsonl         one line per epoch
    RUN/checkpoints/epoch_0010.safetensors + epoch_0010.json (sidecar with the sha256)

The sidecar is written after the weights, so a checkpoint counts only once both exist and
the weights hash to the sidecar's sha256: a crash mid-save leaves nothing that looks valid.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..errors import CkptkdError
from .io import atomic_write, load_weights, read_json, save_weights, write_json

FORMAT = "ckptkd-run"


@dataclass
class Checkpoint:
    """One saved model of a trajectory. ``meta`` holds the sidecar (metrics at that point)."""

    path: Path
    epoch: int
    meta: dict = field(default_factory=dict)
    model: str | None = None  # architecture spec, when known
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_weights(self.path, self.sha256)


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_json(self.path / "manifest.json")
        if self.manifest.get("format") != FORMAT:
            raise CkptkdError(f"{str(self.path)!r} holds a manifest.json that is not a ckptkd run")

    # ------------------------------------------------------------ creating

    @classmethod
    def create(cls, path, config: dict, *, model: str, num_classes: int, in_shape, data_fingerprint: str,
               kind: str = "train", overwrite: bool = False, resume: bool = False) -> "Run":
        """Start a run folder, or reopen it when ``resume`` and the config is the same.

        An existing folder is never touched unless ``overwrite`` or a matching ``resume``.
        """
        path = Path(path)
        want = config_hash(config)
        if path.exists() and any(path.iterdir()):
            is_run = (path / "manifest.json").exists()
            if resume and is_run:
                run = cls(path)
                if run.manifest.get("config_sha256") != want:
                    raise CkptkdError(
                        f"{str(path)!r} holds a run with a different config; --resume needs the same config, "
                        "or pass --overwrite to replace it"
                    )
                return run
            if not overwrite:
                what = "a different run" if is_run and cls(path).manifest.get("config_sha256") != want else (
                    "a run" if is_run else "files that are not a ckptkd run")
                raise CkptkdError(
                    f"output folder {str(path)!r} already holds {what}; pass --resume to continue it, "
                    "--overwrite to replace it, or choose another --out"
                )
            if not is_run:
                raise CkptkdError(f"refusing to --overwrite {str(path)!r}: it holds files that are not a ckptkd run")
            shutil.rmtree(path)
        try:
            (path / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write(path / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
            (path / "metrics.jsonl").touch()
            write_json(path / "manifest.json", {
                "format": FORMAT, "version": 1, "kind": kind, "model": model, "num_classes": int(num_classes),
                "in_shape": [int(s) for s in in_shape], "data_fingerprint": data_fingerprint,
                "config_sha256": want, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running",
            })
        except OSError as e:
            raise CkptkdError(f"cannot write run folder {str(path)!r} ({e.strerror}); choose a writable --out with free space") from None
        return cls(path)

    # ------------------------------------------------------------ writing

    def save_checkpoint(self, state_dict: dict[str, torch.Tensor], epoch: int, meta: dict) -> Checkpoint:
        weights = self.path / "checkpoints" / f"epoch_{epoch:04d}.safetensors"
        sha = save_weights(weights, state_dict)
        sidecar = {**meta, "epoch": int(epoch), "sha256": sha, "file": weights.name, "model": self.model}
        write_json(weights.with_suffix(".json"), sidecar)
        return Checkpoint(weights, int(epoch), sidecar, self.model, sha)

    def log(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def mark(self, status: str, **extra) -> None:
        self.manifest.update(status=status, **extra)
        write_json(self.path / "manifest.json", self.manifest)

    # ------------------------------------------------------------ reading

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def checkpoints(self) -> list[Checkpoint]:
        """Valid checkpoints in epoch order (a weights file without its sidecar is skipped)."""
        out = []
        for sidecar in sorted((self.path / "checkpoints").glob("epoch_*.json")):
            meta = read_json(sidecar)
            weights = sidecar.with_suffix(".safetensors")
            if weights.exists():
                out.append(Checkpoint(weights, int(meta["epoch"]), meta, self.model, meta.get("sha256")))
        return sorted(out, key=lambda c: c.epoch)

    def metrics(self) -> list[dict]:
        lines = (self.path / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
