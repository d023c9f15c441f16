"""A run folder: the trajectory of one training, one checkpoint per save point.

    RUN/config.yaml           the exact resolved config
    RUN/manifest.json         what the run is (model, classes, data fingerprint) and its status
    RUN/metrics.jsonl         one line per epoch
    RUN/checkpoints/epoch_0010.safetensors + epoch_0010.json (sidecar with the sha256)
    RUN/tensorboard/          the metrics again as TensorBoard events, when tensorboard is installed
                              (CKPTKD_TENSORBOARD=0 turns it off)

The sidecar is written after the weights, so a checkpoint counts only once both exist and
the weights hash to the sidecar's sha256: a crash mid-save leaves nothing that looks valid.

Crash tests name the moment to die: ``CKPTKD_FAULT=POINT:N`` SIGKILLs the process at POINT of
the N-th save point it writes (counted from 1 per process): ``mid-save`` (weights written, no
sidecar yet), ``before-state`` (checkpoint complete, resume state still the previous one) or
``after-save`` (checkpoint and resume state written). Two more points name the N-th folder this
process creates: ``mid-create`` (the new folder half written, not yet in place) and
``mid-overwrite`` (the old run moved aside, not yet deleted). Unset, it costs one dict lookup.
"""
from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..config import hashed_form
from ..errors import CkptkdError, warn
from ..io import append_jsonl, atomic_write, occupied, read_json, write_error, write_json
from .io import load_weights, save_weights

FORMAT = "ckptkd-run"
STATE_NAME = "state.pt"  # resume state; loaded with weights_only=True
_saves = 0  # save points this process has begun: the N of CKPTKD_FAULT
_creates = 0  # run folders this process has begun to create: the N of the create points


def _fault(point: str, n: int | None = None) -> None:
    """Die here if CKPTKD_FAULT names this point of the N-th save point (or ``n``; see the module docstring)."""
    if os.environ.get("CKPTKD_FAULT") == f"{point}:{_saves if n is None else n}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Checkpoint:
    """One saved model of a trajectory. ``meta`` holds the sidecar (metrics at that point)."""

    path: Path
    epoch: int
    meta: dict = field(default_factory=dict)
    model: str | None = None  # architecture spec, when known
    sha256: str | None = None
    in_shape: tuple[int, ...] | None = None  # one training sample's shape; None: unknown (foreign files)
    data_fingerprint: str | None = None  # ``Dataset.fingerprint`` of its training data; None: unknown

    @property
    def name(self) -> str:
        return self.path.stem

    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_weights(self.path, self.sha256)


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(hashed_form(config), sort_keys=True).encode()).hexdigest()


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tb = None  # the TensorBoard writer: opened by the first log(), False when unavailable
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
        if resume and overwrite:  # one of them would be ignored
            raise CkptkdError("resume and overwrite contradict each other: resume continues the run in "
                              f"{str(path)!r}, overwrite replaces it; pass one")
        want = config_hash(config)
        if occupied(path):
            is_run = (path / "manifest.json").exists()
            if resume and is_run:
                run = cls(path)
                if run.manifest.get("config_sha256") != want:
                    raise CkptkdError(
                        f"{str(path)!r} holds a run with a different config; --resume needs the same config, "
                        "or pass --overwrite to replace it"
                    )
                stopped = run.manifest.get("stopped_on_data")
                if run.manifest.get("data_fingerprint") != data_fingerprint and stopped:  # the bad file was dealt with
                    warn(f"{str(path)!r} stopped on a bad image ({stopped.split(';')[0]}); resuming it on the data as "
                         f"it is now (fingerprint {str(run.manifest.get('data_fingerprint'))[:12]}, now "
                         f"{data_fingerprint[:12]})")
                    run.note(data_fingerprint=data_fingerprint, stopped_on_data=None)
                elif run.manifest.get("data_fingerprint") != data_fingerprint:  # same config, yet the files changed
                    raise CkptkdError(
                        f"{str(path)!r} was started on other data (fingerprint "
                        f"{str(run.manifest.get('data_fingerprint'))[:12]}, the data now {data_fingerprint[:12]}); "
                        "--resume needs the same data, or pass --overwrite to start again"
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
            _set_aside(path)
        global _creates
        _creates += 1
        # Built beside the target and renamed into place, so a kill at any moment leaves either no run
        # or a whole one: never a folder without a manifest that neither --resume nor --overwrite accepts.
        staging = _aside(path, "creating")
        try:
            _clear_leftovers(path)
            (staging / "checkpoints").mkdir(parents=True)
            atomic_write(staging / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
            (staging / "metrics.jsonl").touch()
            _fault("mid-create", _creates)
            write_json(staging / "manifest.json", {
                "format": FORMAT, "version": 1, "kind": kind, "model": model, "num_classes": int(num_classes),
                "in_shape": [int(s) for s in in_shape], "data_fingerprint": data_fingerprint,
                "config_sha256": want, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running",
            })
            if path.exists():
                path.rmdir()  # an empty folder the user made for us
            os.rename(staging, path)
        except (OSError, CkptkdError) as e:  # a read-only or full folder: leave no half-made run behind
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, OSError):
                e = write_error(Path(e.filename) if e.filename else staging, e)
            raise CkptkdError(str(e).replace(str(staging), str(path))) from None  # name the folder the user chose
        return cls(path)

    # ------------------------------------------------------------ writing

    def save_checkpoint(self, state_dict: dict[str, torch.Tensor], epoch: int, meta: dict) -> Checkpoint:
        global _saves
        _saves += 1
        weights = self.path / "checkpoints" / f"epoch_{epoch:04d}.safetensors"
        sha = save_weights(weights, state_dict)
        _fault("mid-save")
        sidecar = {**meta, "epoch": int(epoch), "sha256": sha, "file": weights.name, "model": self.model,
                   "in_shape": self.manifest["in_shape"], "data_fingerprint": self.manifest["data_fingerprint"]}
        write_json(weights.with_suffix(".json"), sidecar)
        _fault("before-state")
        return checkpoint_of(weights, sidecar, self.manifest)

    def save_state(self, state: dict) -> None:
        """The full training state at a save point (weights, optimizer, schedule, RNG, epoch), for --resume."""
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.path / STATE_NAME, buf.getvalue())
        _fault("after-save")

    def load_state(self) -> dict | None:
        """The state saved by ``save_state``, or None when the run never reached a save point."""
        path = self.path / STATE_NAME
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any damage means the same thing to the user
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise CkptkdError(f"resume state {str(path)!r} is damaged ({first}); rerun with --overwrite") from None

    def truncate_metrics(self, last_epoch: int) -> None:
        """Forget the log of epochs after ``last_epoch`` (they are trained again on resume)."""
        kept = [r for r in self.metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    def log(self, record: dict) -> None:
        append_jsonl(self.path / "metrics.jsonl", record)
        self._log_tensorboard(record)

    def _log_tensorboard(self, record: dict) -> None:
        """The record's numbers as TensorBoard scalars; never lets TensorBoard break a training."""
        if self._tb is None:
            self._tb = _open_tensorboard(self.path / "tensorboard") or False
        if self._tb is False:
            return
        step = record.get("epoch")
        try:
            for key, value in record.items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool) and key != "epoch":
                    self._tb.add_scalar(key, float(value), global_step=step if isinstance(step, int) else None)
            self._tb.flush()
        except Exception:  # noqa: BLE001 - a broken optional logger is dropped, the jsonl log stays
            self._tb = False

    def close_tensorboard(self) -> None:
        if self._tb:
            try:
                self._tb.close()
            except Exception:  # noqa: BLE001
                pass
        self._tb = None

    def mark(self, status: str, **extra) -> None:
        self.note(status=status, **extra)
        self.close_tensorboard()

    def note(self, **fields) -> None:
        """Record ``fields`` in the manifest, e.g. the teachers a student learned from."""
        self.manifest.update(fields)
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
                out.append(checkpoint_of(weights, meta, self.manifest))
        return sorted(out, key=lambda c: c.epoch)

    def metrics(self) -> list[dict]:
        """The logged epochs; a last line cut short by a crash is skipped."""
        out = []
        for line in (self.path / "metrics.jsonl").read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def checkpoint_of(weights: Path, sidecar: dict, manifest: dict | None = None, model: str | None = None) -> Checkpoint:
    """The ``Checkpoint`` a ckptkd sidecar describes; what it lacks (sidecars written before
    they held the input shape and data) comes from its run's manifest, when there is one."""
    known = {**(manifest or {}), **sidecar}
    shape = known.get("in_shape")
    return Checkpoint(weights, int(sidecar.get("epoch", 0)), sidecar, model or known.get("model"),
                      sidecar.get("sha256"), tuple(int(s) for s in shape) if shape is not None else None,
                      known.get("data_fingerprint"))


def _aside(path: Path, what: str) -> Path:
    """The hidden sibling of ``path`` where a run is built (``creating``) or deleted (``removing``)."""
    return path.parent / f".{path.name}.ckptkd-{what}"


def _clear_leftovers(path: Path) -> None:
    """Delete what a process killed while creating or --overwrite-ing ``path`` left beside it,
    saying so: the command that finds them starts ``path`` afresh (there was no run to resume)."""
    for what, why in (("creating", "while it created the run"), ("removing", "while --overwrite deleted the old run")):
        left = _aside(path, what)
        if left.exists():
            shutil.rmtree(left, ignore_errors=True)
            warn(f"removed {left.name}, left beside {str(path)!r} by a ckptkd killed {why}; "
                 f"starting {str(path)!r} as a new run")


def _set_aside(path: Path) -> None:
    """Delete the run at ``path`` for --overwrite: renamed aside first, so a kill while deleting
    leaves no half-deleted run at ``path``, and the next create clears what is left."""
    trash = _aside(path, "removing")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(path, trash)
    except OSError as e:
        raise write_error(path, e) from None
    _fault("mid-overwrite", _creates + 1)
    shutil.rmtree(trash, ignore_errors=True)


_TB_MISSING = False


def _open_tensorboard(folder: Path):
    """A ``SummaryWriter`` on ``folder``, or None without tensorboard (the optional extra) or when turned off."""
    if os.environ.get("CKPTKD_TENSORBOARD", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    global _TB_MISSING
    if _TB_MISSING:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - not installed, or installed but broken: metrics.jsonl is enough
        _TB_MISSING = True
        return None
    try:
        return SummaryWriter(log_dir=str(folder))
    except Exception:  # noqa: BLE001 - e.g. a folder it cannot write
        return None
