"""Atomic file writes and safe weight files.

A file is written to a temporary name in the same folder, fsynced, then renamed over the
target, so a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CkptkdError


# mkstemp makes 0600 files; give ours the mode open() would (0666 less the umask), read once
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    except OSError:  # a filesystem without modes keeps its own
        pass
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # a read-only or full folder is the user's to fix: say which
            raise write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append ``record`` as one JSON line, flushed to disk (a kill loses at most that line)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise write_error(path, e) from None


def occupied(path: str | Path) -> bool:
    """Whether the output folder ``path`` already holds something. A file there is refused:
    every command that writes a folder says so the same way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CkptkdError(f"output folder {str(path)!r} is a file; choose a folder for --out")
    return path.exists() and any(path.iterdir())


def make_folder(path: str | Path) -> None:
    """``mkdir -p`` that fails with the one-line message of ``write_error``."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only parent folder
        raise write_error(Path(e.filename or path), e) from None


def write_error(path: str | Path, e: OSError) -> CkptkdError:
    """The one-line message for an ``OSError`` while writing ``path``: a full disk, a read-only folder, ..."""
    path = Path(path)
    folder, reason = str(path.parent), e.strerror or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CkptkdError(f"no space left to write {str(path)!r} ({reason}); free space on the disk that holds "
                           f"{folder!r}, or choose another output folder")
    if e.errno == errno.ENOENT:
        return CkptkdError(f"cannot write {str(path)!r}: the folder {folder!r} does not exist")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CkptkdError(f"cannot write {str(path)!r}: the folder {folder!r} is not writable ({reason}); "
                           "make it writable or choose another output folder")
    return CkptkdError(f"cannot write {str(path)!r} ({reason}); check that {folder!r} is a writable folder "
                       "with free space")


def _fsync_dir(folder: Path) -> None:
    # the rename itself is only durable once the directory entry is flushed
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CkptkdError(f"{str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CkptkdError(f"{str(path)!r} is not valid JSON ({e}); the file is damaged") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
