"""Checkpoint weight files: safetensors, written atomically and read with their hash checked."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CkptkdError
from ..io import atomic_write, sha256_bytes


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> str:
    """Write a state_dict as safetensors, atomically; return the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = st_save(tensors)
    atomic_write(path, data)
    return sha256_bytes(data)


def load_weights(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its hash when one is given."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CkptkdError(f"checkpoint {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CkptkdError(f"{str(path)!r} is a folder, not a checkpoint file") from None
    if not data:
        raise CkptkdError(f"checkpoint {str(path)!r} is empty (0 bytes); it was not saved completely")
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CkptkdError(
            f"checkpoint {str(path)!r} does not match the sha256 in its sidecar; it is truncated or was modified"
        )
    try:
        return st_load(data)
    except Exception as e:  # SafetensorError, ValueError, RuntimeError, ...: a damaged or foreign file
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CkptkdError(f"checkpoint {str(path)!r} is not a valid safetensors file ({detail})") from None
