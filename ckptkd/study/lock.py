"""One driver per study folder: ``STUDY/.lock``, held with ``fcntl.flock`` while ``ckptkd study`` runs.

Two drivers on one folder would run the same cells twice and race on results.json. The
lock is advisory and belongs to the open file, so the kernel drops it when its process
ends however it ends (a kill included): a stale lock file never blocks the next run, and
the file itself stays (it holds the last holder's pid, for the message). Every executor
takes it, since it is the driver, not the engine, that writes the folder.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from ..errors import CkptkdError
from ..io import write_error

NAME = ".lock"


class StudyLock:
    def __init__(self, root: Path):
        self.path = Path(root) / NAME
        self._fd: int | None = None

    def __enter__(self) -> "StudyLock":
        if self._fd is not None:  # taken already (before study.yaml is written); held till __exit__
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CkptkdError(f"study folder {str(self.path.parent)!r} is in use by another ckptkd study "
                              f"({holder}); wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)  # who holds it now, for the message a second driver gives
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
