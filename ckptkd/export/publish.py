"""Writing the exported file so that a kill at any moment leaves the whole file or nothing.

``ckptkd.io.atomic_write`` renames a complete temporary file over the target, so the target is
never half written; but a kill before the rename leaves the temporary file (``.NAME.XXXX.tmp``)
behind. Here the bytes go into an unnamed file in the target's folder (Linux ``O_TMPFILE``),
which the kernel frees if the process dies, and which gets a name only once it is complete and
on disk. Where the filesystem has no unnamed files, ``atomic_write`` does the job.

Crash tests name the moment to die, as for run folders (``ckptkd/trajectory/run.py``):
``CKPTKD_FAULT=mid-export:1`` SIGKILLs the process with the file's bytes written and synced,
not yet named.
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from ..io import _UMASK, _fsync_dir, atomic_write, write_error

_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}  # what open(O_TMPFILE) says without it


def _fault(point: str) -> None:
    if os.environ.get("CKPTKD_FAULT") == f"{point}:1":
        os.kill(os.getpid(), signal.SIGKILL)


def publish(path: str | Path, data: bytes) -> None:
    """Put ``data`` at ``path`` (replacing what is there): complete, or not at all."""
    path = Path(path)
    try:
        fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o666 & ~_UMASK) if os.path.isdir("/proc/self/fd") \
            else None  # naming an unnamed file goes through /proc
    except AttributeError:  # not Linux
        fd = None
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise write_error(path, e) from None
        fd = None
    if fd is None:
        _fault("mid-export")
        atomic_write(path, data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            _fault("mid-export")
            proc_fds = os.open("/proc/self/fd", os.O_RDONLY)
            try:  # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: the unnamed file gets a name
                os.link(str(f.fileno()), tmp, src_dir_fd=proc_fds, follow_symlinks=True)
            finally:
                os.close(proc_fds)
        os.replace(tmp, path)  # a name that is new, or the old file's, in one step
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    _fsync_dir(path.parent)
