"""Checkpoints written by other tools: plain PyTorch state_dicts and Lightning ``.ckpt`` files.

They are read with ``torch.load(weights_only=True)`` only, which refuses any pickle that
would build arbitrary objects (and so run code).
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from ..errors import CkptkdError

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "student", "weights")


def read_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth``/``.ckpt`` file, unwrapped from Lightning-style dicts."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CkptkdError(f"checkpoint {str(path)!r} does not exist") from None
    except OSError as e:
        raise CkptkdError(f"cannot read checkpoint {str(path)!r} ({e.strerror})") from None
    if size == 0:
        raise CkptkdError(f"checkpoint {str(path)!r} is empty (0 bytes); it was not saved completely")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CkptkdError(
            f"refusing to load {str(path)!r}: it is not a plain-tensor checkpoint and loading it could run code "
            f"({_unpickler_reason(str(e))}); re-save it as a state_dict or safetensors"
        ) from None
    except IsADirectoryError:
        raise CkptkdError(f"{str(path)!r} is a folder, not a checkpoint file") from None
    except Exception as e:  # torch raises many types (RuntimeError, KeyError, IndexError, ...) for damaged files
        detail = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
        raise CkptkdError(f"checkpoint {str(path)!r} is truncated or not a PyTorch file ({detail})") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CkptkdError(f"checkpoint {str(path)!r} holds no state_dict of tensors")
    return {str(k): v for k, v in obj.items()}


def _unpickler_reason(text: str) -> str:
    """The one informative line of torch's weights-only refusal (its message spans a page)."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.?\s+Please |\n\n|$)", text, re.S)
    reason = " ".join(m.group(1).split()) if m else "it holds objects other than tensors"
    return re.sub(r"\x1b\[[0-9;]*m", "", reason)[:160]


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
