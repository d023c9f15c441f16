"""Checkpoints written by other tools: plain PyTorch state_dicts and Lightning ``.ckpt`` files.

They are read with ``torch.load(weights_only=True)`` only, which refuses any pickle that
would build arbitrary objects (and so run code).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..errors import CkptkdError

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "student", "weights")


def read_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth``/``.ckpt`` file, unwrapped from Lightning-style dicts."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CkptkdError(f"checkpoint {str(path)!r} does not exist") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CkptkdError(
            f"refusing to load {str(path)!r}: it is not a plain-tensor checkpoint and loading it could run code "
            f"({first[:160]}); re-save it as a state_dict or safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CkptkdError(f"checkpoint {str(path)!r} is truncated or not a PyTorch file ({str(e).splitlines()[0][:160]})") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CkptkdError(f"checkpoint {str(path)!r} holds no state_dict of tensors")
    return {str(k): v for k, v in obj.items()}


def match_keys(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.`` of DDP, ``model.`` of a LightningModule, ...)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if wanted <= set(state):
        return state
    prefixes = {k.split(".", 1)[0] + "." for k in state if "." in k}
    for p in sorted(prefixes):
        stripped = {k.removeprefix(p).removeprefix("module."): v for k, v in state.items() if k.startswith(p)}
        if wanted <= set(stripped):
            return stripped
    return state


def epoch_of(path: Path, position: int) -> int:
    """Epoch from the file name (``epoch=19``, ``ckpt_epoch_20``, ``20.pt``), else its position."""
    m = re.search(r"epoch[=_-]?(\d+)", path.stem, re.I) or re.search(r"(\d+)(?!.*\d)", path.stem)
    return int(m.group(1)) if m else position


def foreign_files(folder: str | Path) -> list[Path]:
    files = [p for p in Path(folder).iterdir() if p.suffix in SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: (epoch_of(p, 0), p.name))
