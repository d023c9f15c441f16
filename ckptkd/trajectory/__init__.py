"""The trajectory: checkpoints of a training run, ours or another tool's, and loading them."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CkptkdError, warn
from ..models import create_model
from .foreign import SUFFIXES, epoch_of, foreign_files, match_keys, read_torch_state_dict
from ..io import atomic_write, read_json, sha256_file, write_json
from .io import load_weights, save_weights
from .run import Checkpoint, Run, checkpoint_of
from .writer import Trajectory

__all__ = ["Checkpoint", "Run", "Trajectory", "open_trajectory", "open_checkpoint", "load_model", "check_trained_on",
           "atomic_write", "save_weights", "load_weights", "read_json", "write_json"]


def open_trajectory(path: str | Path, model: str | None = None) -> list[Checkpoint]:
    """Checkpoints of a ckptkd run folder, or of a folder of foreign state_dict files.

    Foreign files need ``model``, the architecture spec; their order is the epoch in the name.
    """
    path = Path(path)
    if not path.is_dir():
        raise CkptkdError(f"trajectory {str(path)!r} is not a folder; give a run folder or a folder of checkpoints")
    if (path / "manifest.json").exists():
        run = Run(path)
        if not (model or run.model):  # kept by a Trajectory of a model ckptkd cannot build
            raise CkptkdError(f"run {str(path)!r} records no architecture ckptkd can build; say it with --model")
        _same_model(path, run.model, model)
        ckpts = run.checkpoints()
        if model:
            for c in ckpts:
                c.model = model
    else:
        files = foreign_files(path)
        if not files:
            raise CkptkdError(
                f"{str(path)!r} holds no ckptkd run and no checkpoint files ({', '.join(SUFFIXES)})"
            )
        if not model:
            raise CkptkdError(f"{str(path)!r} holds foreign checkpoints; say their architecture with --model")
        ckpts = [Checkpoint(p, epoch_of(p, i), {}, model, sha256_file(p)) for i, p in enumerate(files)]
    if not ckpts:
        raise CkptkdError(f"run {str(path)!r} has no valid checkpoint yet")
    return ckpts


def open_checkpoint(path: str | Path, model: str | None = None) -> Checkpoint:
    """One checkpoint file: our safetensors (its sidecar names the model) or a foreign file."""
    path = Path(path)
    if path.is_dir():
        raise CkptkdError(f"{str(path)!r} is a folder; give a checkpoint file "
                          "(e.g. RUN/checkpoints/epoch_0030.safetensors)")
    if not path.exists():
        raise CkptkdError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        sidecar = path.with_suffix(".json")
        meta = {}
        if sidecar.exists():
            meta = read_json(sidecar)
        if not (model or meta.get("model")):
            what = "records no architecture ckptkd can build" if meta else "has no sidecar naming its model"
            raise CkptkdError(f"checkpoint {str(path)!r} {what}; say its architecture (--teacher-model / --model)")
        _same_model(path, meta.get("model"), model)
        manifest = path.parent.parent / "manifest.json"  # a sidecar older than its in_shape: the run knows
        manifest = read_json(manifest) if meta and "in_shape" not in meta and manifest.exists() else None
        return checkpoint_of(path, meta, manifest if (manifest or {}).get("format") == "ckptkd-run" else None, model)
    if path.suffix not in SUFFIXES:
        raise CkptkdError(f"{str(path)!r} is not a checkpoint file (.safetensors, {', '.join(SUFFIXES)})")
    if not model:
        raise CkptkdError(f"{str(path)!r} is a foreign checkpoint; say its architecture (--teacher-model / --model)")
    return Checkpoint(path, epoch_of(path, 0), {}, model, None)


def _same_model(path: Path, recorded: str | None, given: str | None) -> None:
    if recorded and given and given != recorded:
        raise CkptkdError(f"{str(path)!r} was saved by ckptkd as {recorded!r}, not {given!r}; "
                          "leave out --model / --teacher-model for ckptkd checkpoints (they name their own)")


def check_trained_on(ckpt: Checkpoint, in_shape, fingerprint: str | None = None) -> None:
    """Refuse a checkpoint trained on inputs of another shape than ``in_shape``; warn (once per
    process and pair of data) when it was trained on other data of the same shape.

    The 1-D CNNs pool over any length and the MLPs flatten any shape of the right size, so a
    model may well *run* on the wrong data: only this record can tell. Foreign checkpoints
    record nothing and are taken on trust.
    """
    shape = tuple(int(s) for s in in_shape)
    if ckpt.in_shape is not None and tuple(ckpt.in_shape) != shape:
        raise CkptkdError(f"checkpoint {str(ckpt.path)!r} was trained on inputs of shape {tuple(ckpt.in_shape)} "
                          f"but the data's are {shape}; give the data it was trained on")
    if fingerprint and ckpt.data_fingerprint and ckpt.data_fingerprint != fingerprint:
        warn(f"checkpoint {str(ckpt.path)!r} was trained on other data of the same shape {shape} "
             f"(data fingerprint {ckpt.data_fingerprint[:12]}, this data's {fingerprint[:12]})",
             key=(ckpt.data_fingerprint, fingerprint))  # once for a whole trajectory


def state_dict_of(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    if ckpt.path.suffix == ".safetensors":
        return ckpt.state_dict()
    return read_torch_state_dict(ckpt.path)


def load_model(ckpt: Checkpoint, num_classes: int, in_shape: tuple[int, ...],
               fingerprint: str | None = None) -> nn.Module:
    """Build ``ckpt.model`` and load the checkpoint's weights into it, in eval mode.

    ``in_shape`` and ``fingerprint`` are the data's, checked by ``check_trained_on``.
    """
    check_trained_on(ckpt, in_shape)
    model = create_model(ckpt.model, num_classes, in_shape)
    wanted = set(model.state_dict())
    state = match_keys(state_dict_of(ckpt), wanted)
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - wanted)
    if missing or unexpected:
        raise CkptkdError(
            f"checkpoint {str(ckpt.path)!r} does not match architecture {ckpt.model!r} "
            f"({len(missing)} missing keys e.g. {missing[:2]}, {len(unexpected)} unexpected e.g. {unexpected[:2]}); "
            "give the architecture it was trained with"
        )
    mine = model.state_dict()
    bad = [k for k in mine if k in wanted and state[k].shape != mine[k].shape]  # in the model's layer order
    head = next((k for k in bad if k.endswith("fc.bias")), None)  # the classifier's bias: one entry per class
    if head and state[head].shape[:1] != mine[head].shape[:1]:
        raise CkptkdError(
            f"checkpoint {str(ckpt.path)!r} was trained for {state[head].shape[0]} classes but the data has "
            f"{num_classes}; give data with the classes it was trained on"
        )
    if bad:
        k = bad[0]
        raise CkptkdError(
            f"checkpoint {str(ckpt.path)!r} does not fit {ckpt.model!r}: {k} is {tuple(state[k].shape)} "
            f"but the model expects {tuple(mine[k].shape)}; give the architecture and the data it was trained with"
        )
    model.load_state_dict(state)
    check_trained_on(ckpt, in_shape, fingerprint)  # the warning, once the weights are known to fit
    return model.eval()
