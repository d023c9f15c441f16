"""Whether image files are decoded into memory or streamed: ``data.stream`` true or false, or
unset (None, the default), where ckptkd decides from the memory the decoded data would take.

The estimate is what the in-memory path holds: every image of every split as float32,
(number of files) x (the first image's decoded C x H x W) x 4 bytes. When that is more than
half the memory available, the images are streamed, and a one-line warning says so; when
``data.stream: false`` keeps them in memory anyway, a warning says that too.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import warn

FLOAT32 = 4
MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def available_memory() -> int | None:
    """Bytes this process could still take: Linux's MemAvailable (/proc/meminfo), lowered to what
    the cgroup v2 limit leaves (memory.max less memory.current, in a container); elsewhere the
    free physical pages (``os.sysconf``, which counts no reclaimable cache, so it errs toward
    streaming); None where neither can be read (Windows): then nothing streams unasked."""
    free = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(free, 0)


def decoded_bytes(count: int, sample_shape) -> int:
    size = 1
    for s in sample_shape:
        size *= int(s)
    return count * size * FLOAT32


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def choose_streaming(stream: bool | None, spec: str, count: int, sample_shape) -> bool:
    """``data.stream`` resolved for ``count`` images of ``sample_shape``, with the line that says why
    when the choice was not the user's, or the user's choice may not fit."""
    if stream:
        return True
    need, free = decoded_bytes(count, sample_shape), available_memory()
    if free is None or need <= free / 2:
        return False
    if stream is None:
        warn(f"dataset {spec!r}: its {count:,} images would take {_gb(need)} decoded, more than half of the "
             f"{_gb(free)} of memory available, so they are streamed from disk (data.stream: true says so; "
             "false keeps them in memory)")
        return True
    warn(f"dataset {spec!r}: data.stream is false, so its {count:,} images are decoded into memory ({_gb(need)}), "
         f"more than half of the {_gb(free)} available; leave data.stream unset, or pass --stream, to stream them "
         "from disk")
    return False
