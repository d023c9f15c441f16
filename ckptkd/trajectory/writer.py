"""Keeping a trajectory from a training loop that is not ckptkd's.

    traj = Trajectory.create("runs/mine", "mlp_m", num_classes=10, in_shape=(1, 8, 8), data="digits")
    for epoch in range(1, epochs + 1):
        ...  # the user's own loop
        traj.save(model, epoch, metrics={"val_acc": acc, "val_loss": loss})
    traj.close()

The folder is an ordinary run folder (``Run``: manifest, config.yaml, metrics.jsonl, one
safetensors + sidecar per save, each written atomically), so ``ckptkd analyze``, ``select``,
``distill`` and ``report`` read it as they read the output of ``ckptkd train``.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

import torch
from torch import nn

from ..errors import CkptkdError
from .foreign import match_keys
from .run import Checkpoint, Run

WRITER = "ckptkd.Trajectory"
RESERVED = ("epoch", "sha256", "file", "model")  # the sidecar's own keys


class Trajectory:
    """A run folder written by the user's loop; ``model_spec`` None records the model as foreign
    (then ``--model`` is needed later, as for a folder of ``.pt`` files)."""

    def __init__(self, run: Run, expected: dict[str, tuple[int, ...]] | None = None):
        self.run = run
        self._expected = expected  # key -> shape of the spec's model, to check each save against

    @classmethod
    def create(cls, folder: str | Path, model_spec: str | None, num_classes: int, in_shape, *,
               data=None, data_fingerprint: str | None = None, description: str | None = None,
               overwrite: bool = False, resume: bool = False) -> "Trajectory":
        """Start (or, with ``resume`` and the same arguments, reopen) the run folder ``folder``.

        ``model_spec`` is a registered architecture (``ckptkd models``) or ``module.path:function``
        building the same network (called as ``fn(num_classes=..., in_shape=...)``); it is built
        once here, so a wrong spec fails before anything is written. ``data`` (optional) is the
        dataset as ckptkd names it, a spec string (``"digits"``, ``"npz:PATH"``, ...) or a
        ``DataConfig``: recorded, it spares ``--data`` to ``ckptkd analyze`` and ``select``.
        ``data_fingerprint`` (optional) is any string identifying the data, e.g. a loaded
        ``ckptkd.Dataset``'s ``fingerprint``; ``description`` is free text for people.
        """
        in_shape = tuple(int(s) for s in in_shape)
        if int(num_classes) < 2 or not in_shape or min(in_shape) < 1:
            raise CkptkdError(f"a trajectory needs at least 2 classes and a positive in_shape, got "
                              f"num_classes={num_classes}, in_shape={in_shape}")
        expected = None
        if model_spec is not None:
            from ..models import create_model

            reference = create_model(model_spec, int(num_classes), in_shape)
            expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        config = {"writer": WRITER, "model": model_spec, "num_classes": int(num_classes), "in_shape": list(in_shape)}
        if data is not None:
            config["data"] = _data_section(data)
        if description:
            config["description"] = str(description)
        run = Run.create(folder, config, model=model_spec, num_classes=int(num_classes), in_shape=in_shape,
                         data_fingerprint=data_fingerprint, kind="external", overwrite=overwrite, resume=resume)
        return cls(run, expected)

    @property
    def path(self) -> Path:
        return self.run.path

    def save(self, model: nn.Module | dict, epoch: int, metrics: dict | None = None) -> Checkpoint:
        """Save ``model`` (a module or its state_dict) as the checkpoint of ``epoch``, with
        ``metrics`` (numbers such as ``val_acc``, ``val_loss``) in its sidecar and in metrics.jsonl."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise CkptkdError(f"epoch must be a non-negative integer, got {epoch!r}")
        record = _numbers(metrics or {})
        state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
        if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CkptkdError("save() needs a torch nn.Module or a state_dict of tensors")
        if self._expected is not None:
            state = self._fit_spec(state)
        ckpt = self.run.save_checkpoint(state, int(epoch), record)
        self.run.log({"epoch": int(epoch), **record})
        return ckpt

    def _fit_spec(self, state: dict) -> dict:
        """The state_dict under the spec's own key names (a wrapper's ``model.`` prefix dropped),
        refused when it is not the spec's architecture: a mismatch found now, not at analysis."""
        state = match_keys(state, set(self._expected))
        missing = sorted(set(self._expected) - set(state))
        if missing:
            raise CkptkdError(f"the model saved into {str(self.path)!r} is not {self.run.model!r}: "
                              f"{len(missing)} of its weights are missing, e.g. {missing[:2]}; give the model_spec "
                              "that builds it, or None to record it as foreign")
        bad = [k for k, s in self._expected.items() if tuple(state[k].shape) != s]
        if bad:
            k = bad[0]
            raise CkptkdError(f"the model saved into {str(self.path)!r} does not fit {self.run.model!r}: {k} is "
                              f"{tuple(state[k].shape)} but the spec builds {self._expected[k]}")
        return {k: state[k] for k in self._expected}

    def checkpoints(self) -> list[Checkpoint]:
        return self.run.checkpoints()

    def close(self) -> None:
        """Mark the trajectory complete (the folder stays readable either way)."""
        self.run.mark("complete")


def _data_section(data) -> dict:
    """The ``data`` section of the run's config.yaml, as ``ckptkd analyze`` reads it."""
    from ..config import DataConfig, from_dict, to_dict

    if isinstance(data, str):
        data = DataConfig(spec=data)
    if not isinstance(data, DataConfig):
        raise CkptkdError(f"data must be a dataset spec string or a ckptkd.DataConfig, got {type(data).__name__}")
    return to_dict(from_dict(DataConfig, to_dict(data), "data"))  # validated as a config file's would be


def _numbers(metrics: dict) -> dict:
    """Metrics as plain finite floats (tensors and numpy scalars included), keyed by name."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CkptkdError(f"metric {key!r} must be a number, got {type(value).__name__}") from None
        if not math.isfinite(number):
            raise CkptkdError(f"metric {key!r} is {number}; only finite numbers are recorded")
        if key in RESERVED:
            raise CkptkdError(f"metric name {key!r} is reserved for the sidecar itself; rename it")
        out[str(key)] = number
    return out
