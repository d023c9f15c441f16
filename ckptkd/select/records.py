"""Selection inputs kept as tensors: computed once per context, and on disk when it has a folder.

A record is a few named tensors and the wall time they took, in
FOLDER/<folder_name>/<key>.safetensors. The wall time is stored with them so that a policy's
cost (``cost_s``) is the same whether its inputs were computed now or read back. A damaged or
mismatched file is computed again (a lost speed-up, not an error). ``key`` must name
everything the tensors depend on (a sha256 of the data fingerprint and the settings).
"""
from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from ..io import atomic_write

_MEMO: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def tensor_record(ctx, folder_name: str, key: str, compute: Callable[[], dict[str, torch.Tensor]],
                  valid: Callable[[dict[str, torch.Tensor]], bool] = lambda tensors: True) -> dict:
    """{name: tensor, ..., "wall_s": seconds}: ``compute()``'s tensors, timed, kept in memory for
    ``ctx`` and in ``ctx.folder``/``folder_name`` when the context has a folder; a stored record
    is used when ``valid`` accepts its tensors."""
    memo = _MEMO.setdefault(ctx, {})
    if (folder_name, key) in memo:
        return memo[folder_name, key]
    folder = getattr(ctx, "folder", None)
    path = Path(folder) / folder_name / f"{key}.safetensors" if folder is not None else None
    record = _read(path, valid)
    if record is None:
        t0 = time.perf_counter()
        tensors = compute()
        record = {**tensors, "wall_s": time.perf_counter() - t0}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, save_safetensors({k: v.contiguous() for k, v in tensors.items()},
                                                metadata={"wall_s": repr(record["wall_s"])}))
    memo[folder_name, key] = record
    return record


def _read(path: Path | None, valid) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if not valid(tensors):
            return None
        return {**tensors, "wall_s": float(meta["wall_s"])}
    except (OSError, KeyError, ValueError, SafetensorError):
        return None
