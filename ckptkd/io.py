"""Atomic file writes, JSON files and hashes: what every module that writes to disk shares.

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

from .errors import CkptkdError


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
