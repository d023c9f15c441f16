"""Teacher-output cache: a teacher's outputs for every view of the training set, computed once.

A study distills many students from the same checkpoints. Without a cache every student
runs every member of the teacher forward on every batch, so an ensemble of four makes
distillation several times slower than training the student alone. With it the teacher
runs once per (view, sample), in eval mode, and each student reads its targets
from a memory-mapped array: distilling then costs what training with cross-entropy costs.

What keys an entry
    Everything that changes a target: each member's weights sha256 and architecture, in
    member order (the ensemble), the combine rule (and the temperature for ``probs``, whose
    stored output depends on it), the dataset fingerprint, the augmentation and its view
    seed (when augmentation is on), and the storage layout. The key's sha256 names the
    files; the sidecar holds the key itself, compared in full on open. As a last guard,
    opening an entry recomputes a few stored rows with the teacher at hand and refuses the
    entry if they differ (model code changed under the same weights, say). A stale entry is
    recomputed, never served; torchdistill keys on the sample index alone, which is wrong
    as soon as the data is augmented or the teacher changes.

Views
    The view of sample i in epoch e is a function of (view seed, e, i) only
    (``ckptkd.data.augment``), so row [e - 1, i] holds the target of exactly what the
    student sees in epoch e. Without augmentation one view serves every epoch. Epochs past
    the stored views get ``None``, and ``KD`` runs the teacher on that batch instead. A build
    asking for more views than stored extends the entry, copying the stored views.

Files
    CACHE/<key sha256>.npy   one array per teacher: (views, N, C) outputs, or with ``topk``
                             a structured (views, N) array of the k largest, their classes
                             and the mean of the rest
    CACHE/<key sha256>.json  the sidecar: the key, the number of views, build time
    CACHE/<key sha256>.lock  held while the entry is built: concurrent builders compute it once

The array is written to a temporary file, fsynced, renamed into place, and only then is
the sidecar written (atomically too); an entry counts only when both exist and agree, so
a crash mid-build leaves nothing that can be served.

Precision
    ``dtype="float32"`` (the default) stores the teacher's outputs bit for bit: a student
    distilled from the cache is identical to one whose teacher runs on every batch
    (tests/test_cache.py). ``"float16"`` halves the file (outputs to ~1e-3 relative);
    ``topk=k`` keeps k values per sample plus the mean of the others, for many classes.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .errors import CkptkdError
from .io import _fsync_dir, read_json, sha256_bytes, write_json
from .teacher import target_log_probs

FORMAT = "ckptkd-teacher-cache"
VERSION = 1
SPOT_CHECK_SAMPLES = 8


@dataclass(frozen=True)
class Layout:
    """How outputs are stored: ``dtype`` float32 | float16, and ``topk`` (0: all classes)."""

    dtype: str = "float32"
    topk: int = 0

    def check(self, num_classes: int) -> None:
        if self.dtype not in ("float32", "float16"):
            raise CkptkdError(f"cache dtype must be float32 or float16, got {self.dtype!r}")
        if not 0 <= self.topk < num_classes:
            raise CkptkdError(f"cache topk must be in [0, {num_classes}) for {num_classes} classes, got {self.topk}")

    def array_dtype(self, num_classes: int) -> np.dtype:
        if not self.topk:
            return np.dtype(self.dtype)
        classes = "<i2" if num_classes <= np.iinfo(np.int16).max else "<i4"
        return np.dtype([("values", self.dtype, (self.topk,)), ("classes", classes, (self.topk,)),
                         ("rest", self.dtype)])

    def shape(self, views: int, n: int, num_classes: int) -> tuple[int, ...]:
        return (views, n) if self.topk else (views, n, num_classes)

    def encode(self, out: torch.Tensor) -> np.ndarray:
        """(B, C) float32 outputs as stored rows."""
        if not self.topk:
            return out.numpy().astype(self.dtype)
        values, classes = out.topk(self.topk, dim=1)
        rest = (out.sum(1) - values.sum(1)) / (out.shape[1] - self.topk)
        rows = np.empty(len(out), self.array_dtype(out.shape[1]))
        rows["values"], rows["classes"], rows["rest"] = values.numpy(), classes.numpy(), rest.numpy()
        return rows

    def decode(self, rows: np.ndarray, num_classes: int) -> torch.Tensor:
        """Stored rows as (B, C) float32 outputs; with ``topk`` the others get their mean."""
        if not self.topk:
            return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        out = torch.from_numpy(rows["rest"].astype(np.float32))[:, None].repeat(1, num_classes)
        classes = torch.from_numpy(rows["classes"].astype(np.int64))
        return out.scatter_(1, classes, torch.from_numpy(rows["values"].astype(np.float32)))


def cache_key(teacher, data, temperature: float, layout: Layout) -> dict:
    """Everything a stored output depends on, as plain JSON (see the module docstring)."""
    augmented = data.augment.enabled
    key = {
        "format": FORMAT, "version": VERSION,
        "members": teacher.identity,
        "combine": teacher.combine,
        "temperature": float(temperature) if teacher.combine == "probs" else None,
        "data": data.fingerprint,
        "num_samples": len(data.x_train), "num_classes": data.num_classes,
        "augment": repr(data.augment) if augmented else None,
        "view_seed": data.view_seed if augmented else None,
        "layout": {"dtype": layout.dtype, "topk": layout.topk},
    }
    return json.loads(json.dumps(key))  # what the sidecar will read back: lists, not tuples


def key_name(key: dict) -> str:
    return sha256_bytes(json.dumps(key, sort_keys=True).encode())


class TeacherCache:
    """One teacher's stored outputs, memory-mapped. Build or reuse one with ``build``."""

    def __init__(self, path: Path, meta: dict, array: np.ndarray):
        self.path, self.meta, self.array = path, meta, array
        key = meta["key"]
        self.views = int(meta["views"])
        self.augmented = key["augment"] is not None
        self.combine, self.temperature = key["combine"], key["temperature"]
        self.num_classes = key["num_classes"]
        self.layout = Layout(**key["layout"])
        # dense rows are gathered by torch straight from the mapping (numpy's memmap
        # indexing costs more than the rest of the lookup together)
        self._dense = None if self.layout.topk else torch.from_numpy(array)

    # ------------------------------------------------------------ reading

    def view_of(self, epoch: int) -> int | None:
        """Row block holding ``epoch``'s views, or None when not stored."""
        if not self.augmented:
            return 0
        return epoch - 1 if 1 <= epoch <= self.views else None

    def outputs(self, idx: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """(B, C) stored teacher outputs of samples ``idx`` as seen in ``epoch``."""
        view = self.view_of(epoch)
        if view is None:
            return None
        if self._dense is not None:
            return self._dense[view].index_select(0, idx).float()
        return self.layout.decode(self.array[view][idx.numpy()], self.num_classes)

    def log_probs(self, idx: torch.Tensor, epoch: int, temperature: float) -> torch.Tensor | None:
        """The KD target log p_t^T for ``idx`` in ``epoch``, exactly as ``Teacher.log_probs``
        computes it (float32 dense layout), or None when the epoch's views are not stored."""
        if self.combine == "probs" and temperature != self.temperature:
            raise CkptkdError(f"this cache holds probs-combined outputs at T={self.temperature}, "
                              f"not T={temperature}; build one for that temperature")
        out = self.outputs(idx, epoch)
        if out is None:
            return None
        target = target_log_probs(out, temperature, self.combine)
        if self.layout.topk and self.combine == "probs":
            target = target.log_softmax(-1)  # the filled-in tail makes the stored log-probs not sum to 1
        return target

    # ------------------------------------------------------------ building

    @classmethod
    def build(cls, folder, teacher, data, temperature: float, views: int, *, layout: Layout = Layout(),
              device="cpu", batch_size: int | None = None, progress: bool = False) -> "TeacherCache":
        """The cache of ``teacher`` on ``data`` holding at least ``views`` epochs of views:
        found in ``folder`` when a valid entry exists, else computed there (extending an
        entry with fewer views).

        ``batch_size`` defaults to 128 on CPU, where larger batches spill the caches and run
        slower (cnn1d_l: 1024 takes 30 to 45% longer than 128), and to 1024 on GPUs.
        """
        layout.check(data.num_classes)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        device = torch.device(device)
        batch_size = batch_size or (128 if device.type == "cpu" else 1024)
        want = max(1, int(views)) if data.augment.enabled else 1
        key = cache_key(teacher, data, temperature, layout)
        base = folder / key_name(key)
        # students of one teacher started together (a study's parallel cells): one computes
        # the entry, the others wait here and then find it
        with _exclusive(base.with_suffix(".lock")):
            found = cls.open(folder, teacher, data, temperature, layout=layout, device=device)
            if found is not None and found.views >= want:
                return found
            t0 = time.perf_counter()
            kept = found.views if found is not None else 0
            _write_array(base.with_suffix(".npy"), layout.array_dtype(data.num_classes),
                         layout.shape(want, len(data.x_train), data.num_classes), found,
                         ((view, start, layout.encode(out)) for view, start, out in
                          _views(teacher, data, temperature, device, batch_size, range(kept, want), progress)))
            write_json(base.with_suffix(".json"),
                       {"key": key, "views": want, "build_seconds": round(time.perf_counter() - t0, 3),
                        "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        cache = cls.open(folder, teacher, data, temperature, layout=layout, device=device)
        if cache is None:
            raise CkptkdError(f"the teacher cache just written to {str(folder)!r} does not read back "
                              "(a disk problem, or a teacher whose outputs change from call to call)")
        return cache

    @classmethod
    def open(cls, folder, teacher, data, temperature: float, *, layout: Layout = Layout(),
             device="cpu") -> "TeacherCache | None":
        """The valid entry of this teacher and data in ``folder``, or None."""
        key = cache_key(teacher, data, temperature, layout)
        base = Path(folder) / key_name(key)
        try:
            meta = read_json(base.with_suffix(".json"))
            # copy-on-write: read from the page cache like "r", but writable, as torch wants
            array = np.load(base.with_suffix(".npy"), mmap_mode="c", allow_pickle=False)
        except (CkptkdError, OSError, ValueError):
            return None  # missing, or damaged: rebuilt by the caller
        expected = layout.shape(int(meta.get("views", 0)), len(data.x_train), data.num_classes)
        if (meta.get("key") != key or array.dtype != layout.array_dtype(data.num_classes)
                or array.shape[1:] != expected[1:] or array.shape[0] < expected[0] or expected[0] < 1):
            return None
        cache = cls(base, meta, array)
        return cache if cache._spot_check(teacher, data, temperature, torch.device(device)) else None

    def _spot_check(self, teacher, data, temperature: float, device: torch.device) -> bool:
        """Recompute a few rows of the first and last stored view with ``teacher``."""
        probe = torch.linspace(0, len(data.x_train) - 1, SPOT_CHECK_SAMPLES).long().unique()
        for view in sorted({0, self.views - 1}):
            epoch = view + 1 if self.augmented else None
            x = _view_inputs(data, epoch, probe)
            fresh = self.layout.decode(self.layout.encode(teacher.outputs(x.to(device), temperature).float().cpu()),
                                       self.num_classes)
            stored = self.layout.decode(self.array[view][probe.numpy()], self.num_classes)
            # loose enough for another device's float32 (or TF32) arithmetic, far tighter
            # than what a different teacher, data or augmentation changes
            if not torch.allclose(fresh, stored, rtol=1e-2, atol=1e-2):
                return False
        return True


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive advisory lock on the file ``lock`` (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _view_inputs(data, epoch: int | None, idx) -> torch.Tensor:
    """Training inputs ``idx`` as ``fit`` shows them in ``epoch`` (None: not augmented)."""
    if epoch is None:
        return data.x_train[idx]
    params = data.augment.params(len(data.x_train), data.in_shape, data.view_seed, epoch)
    return data.augment.apply(data.x_train[idx], {k: v[idx] for k, v in params.items()})


@torch.no_grad()
def _views(teacher, data, temperature, device, batch_size, views: range, progress):
    """Yield (view, start, outputs) for every batch of the given views, teacher in eval mode."""
    teacher.eval()
    n = len(data.x_train)
    chunks = [torch.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    for view in tqdm(views, desc="teacher cache", disable=not progress, leave=False):
        epoch = view + 1 if data.augment.enabled else None
        params = data.augment.params(n, data.in_shape, data.view_seed, epoch) if epoch else {}
        for start, x in zip(range(0, n, batch_size), data.batches(chunks)):  # streamed: decoded ahead
            if epoch:
                x = data.augment.apply(x, {k: v[start:start + batch_size] for k, v in params.items()})
            yield view, start, teacher.outputs(x.to(device), temperature).float().cpu()


def _write_array(path: Path, dtype: np.dtype, shape: tuple[int, ...], old: TeacherCache | None, rows) -> None:
    """Fill a new array from ``rows`` ((view, start, encoded rows), after the views ``old``
    holds, which are copied) in a temporary file, then rename it over ``path``: a reader
    sees the old entry or the new one, never a partial one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npy")
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        for view in range(old.views if old is not None else 0):
            array[view] = old.array[view]
        for view, start, block in rows:
            array[view, start:start + len(block)] = block
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
