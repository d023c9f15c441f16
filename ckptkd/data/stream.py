"""Images decoded per batch: data larger than memory.

``ImageFiles`` stands where a dataset's input tensor stands (``data.x_train``): ``len``,
``shape``, ``dim()`` and ``x[idx]`` (those samples as a float32 tensor, decoded in this
process) work as on a tensor, so the teacher cache, the information probes and anything
else that indexes the inputs needs no second code path. ``batches(x, index_lists)`` is the
fast way through: DataLoader workers decode the upcoming batches while the model trains on
this one (a tensor is just indexed). Batches come back in the order asked for, so the
training loop's seeded permutation, sharded by rank, decides what each rank decodes: what
``DistributedSampler`` does, with the in-memory path's exact batches.

What is held in memory is one reference per sample (a path, or a shard and a byte offset),
the labels, and the batches in flight; the pixels stay on disk. Images are scaled and
standardised exactly as in memory (``to_float``, with statistics from exact per-channel
histograms), so a streamed sample is bitwise the in-memory one.
"""
from __future__ import annotations

import io
import multiprocessing
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..errors import CkptkdError
from .imagefolder import decode

SCAN_BATCH = 256
READ_SIZE = 1 << 16


class UnreadableImage(CkptkdError):
    """An image that does not decode, or not to the size of the others: at load, or found
    mid-epoch by the batch that holds it (a run then records it, see ``cli.commands``)."""


class FileRefs:
    """One image file per sample (image folders)."""

    remedy = "remove it from the dataset folder or rename it to start with '.' to hide it"

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return self.paths[i]

    def open(self, i: int):
        return self.paths[i]

    def contents(self):
        """Each sample's file bytes in turn (None where the file cannot be read)."""
        for path in self.paths:  # os.read: a third faster than open().read() on small files
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    parts = [os.read(fd, READ_SIZE)]
                    while len(parts[-1]) == READ_SIZE:  # a file larger than one read
                        parts.append(os.read(fd, READ_SIZE))
                finally:
                    os.close(fd)
            except OSError:
                yield None
            else:
                yield parts[0] if len(parts) == 1 else b"".join(parts)

    def subset(self, idx) -> "FileRefs":
        return FileRefs([self.paths[i] for i in idx])


class TarRefs:
    """One tar member per sample, read by byte offset (WebDataset shards, see ``shards``)."""

    remedy = "remove the sample from its shard"

    def __init__(self, shards: list[str], table: np.ndarray, names: list[str]):
        self.shards, self.table, self.names = shards, table, names  # table: (N, 3) shard, offset, size

    def __len__(self) -> int:
        return len(self.table)

    def name(self, i: int) -> str:
        return f"{self.shards[self.table[i, 0]]}:{self.names[i]}"

    def open(self, i: int):
        shard, offset, size = (int(v) for v in self.table[i])
        with open(self.shards[shard], "rb") as f:
            f.seek(offset)
            return io.BytesIO(f.read(size))

    def contents(self):
        """Each sample's image bytes in turn, read at their offsets (one open file per shard)."""
        files = {}
        try:
            for shard, offset, size in self.table.tolist():
                f = files.get(shard) or files.setdefault(shard, open(self.shards[shard], "rb"))
                f.seek(offset)
                yield f.read(size)
        finally:
            for f in files.values():
                f.close()

    def subset(self, idx) -> "TarRefs":
        idx = np.asarray(idx, dtype=np.int64)
        return TarRefs(self.shards, self.table[idx], [self.names[i] for i in idx])


class _Decode(TorchDataset):
    """index -> (index, uint8 (C, H, W) tensor), or the error's text: raised in the main
    process as one ``CkptkdError`` line rather than a worker's traceback."""

    def __init__(self, refs, size):
        self.refs, self.size = refs, size

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):
        try:
            image = decode(self.refs.open(i), self.size, self.refs.name(i), self.refs.remedy)
        except (CkptkdError, OSError) as e:
            return i, str(e) if isinstance(e, CkptkdError) else f"{self.refs.name(i)}: cannot read ({e})"
        return i, torch.from_numpy(image).permute(2, 0, 1)


def _worker_context():
    """How DataLoader workers start: by forking this process (PyTorch's default), except in a
    torchrun process group, where they start from a fork server.

    Forking copies a process whose other threads may hold a lock at that instant, and the
    child then waits forever: both ranks of a torchrun test once hung on workers stuck in
    fork, with gloo's threads running beside them. The fork server is a fresh interpreter
    that has imported this module once, so each worker still starts in milliseconds; like
    ``spawn``, it re-imports the main module, which is why ``ckptkd/__main__.py`` keeps its
    work under ``if __name__ == "__main__"`` (a torchrun script of your own needs the same).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # read when the server starts; later calls change nothing
    return ctx


def _collate(items):
    """Stack a batch in the worker: one shared-memory tensor crosses to the main process, not B."""
    for _, x in items:
        if isinstance(x, str):
            return x
    if any(x.shape != items[0][1].shape for _, x in items):
        return [(i, tuple(x.shape)) for i, x in items]  # images of different sizes: named by the main process
    return torch.stack([x for _, x in items])


@dataclass(frozen=True)
class ImageFiles:
    """Images on disk, indexed like an (N, C, H, W) float32 tensor (see the module docstring)."""

    refs: object  # FileRefs | TarRefs
    size: tuple[int, int] | None = None  # resize every image to (H, W)
    sample_shape: tuple[int, ...] = ()  # (C, H, W), known after with_shape()
    mean: torch.Tensor | None = None  # per channel, set by load_dataset from the training images
    std: torch.Tensor | None = None
    workers: int = 0  # DataLoader worker processes for batches()
    reference: str = ""  # the image whose size ``sample_shape`` is: named when another differs

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def dim(self) -> int:
        return self.ndim

    def subset(self, idx) -> "ImageFiles":
        """The samples ``idx`` (e.g. a validation split carved from the training set)."""
        return replace(self, refs=self.refs.subset(np.asarray(idx, dtype=np.int64)))

    def with_shape(self) -> "ImageFiles":
        """These files with the sample shape of their first image, the one image decoded to learn it."""
        if not len(self):
            return self
        _, image = _Decode(self.refs, self.size)[0]
        if isinstance(image, str):
            raise UnreadableImage(image)
        return replace(self, sample_shape=tuple(image.shape), reference=self.refs.name(0))

    def __getitem__(self, key) -> torch.Tensor:
        """Samples ``key`` (an int, a slice or indices) as float32, decoded in this process."""
        if isinstance(key, (int, np.integer)):
            return self[[int(key)]][0]
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64).reshape(-1)
        if not len(idx):
            return torch.empty((0, *self.sample_shape))
        dec = _Decode(self.refs, self.size)
        return to_float(self._checked(_collate([dec[int(i)] for i in idx]), idx), self.mean, self.std)

    def decoded(self, index_lists, workers: int | None = None):
        """The uint8 batches of ``index_lists`` in order, decoded ``workers`` processes ahead."""
        lists = [[int(i) for i in b] for b in index_lists]
        workers = self.workers if workers is None else workers
        loader = DataLoader(_Decode(self.refs, self.size), batch_sampler=lists, num_workers=workers,
                            collate_fn=_collate, prefetch_factor=4 if workers else None,
                            multiprocessing_context=_worker_context() if workers else None)
        return (self._checked(out, idx) for idx, out in zip(lists, loader))

    def batches(self, index_lists):
        return (to_float(x, self.mean, self.std) for x in self.decoded(index_lists))

    def _checked(self, out, idx) -> torch.Tensor:
        """A decoded batch, or the error of its first bad image: the message a load that decoded
        every image gave, now raised by whichever batch meets the image first."""
        if isinstance(out, str):
            raise UnreadableImage(out)
        shapes = out if isinstance(out, list) else [(int(idx[0]), tuple(out.shape[1:]))]
        want = self.sample_shape or shapes[0][1]
        odd = next((i for i, shape in shapes if shape != want), None)
        if odd is not None:
            first = self.reference or self.refs.name(shapes[0][0])
            raise UnreadableImage(f"images differ in size: {first} and {self.refs.name(odd)}; set data.image_size "
                                  "to resize them all")
        return out


def size_error(refs, a: int, b: int) -> CkptkdError:
    return UnreadableImage(f"images differ in size: {refs.name(a)} and {refs.name(b)}; set data.image_size to "
                           "resize them all")


def sample_histograms(files: ImageFiles, pick, workers: int) -> np.ndarray:
    """The per-channel histograms of the pixel values of images ``pick`` of ``files``, decoded
    ``workers`` processes ahead and checked against ``files.sample_shape`` on the way."""
    hist = np.zeros((files.sample_shape[0] if files.sample_shape else 3, 256), dtype=np.int64)
    for x in files.decoded(torch.as_tensor(np.asarray(pick, dtype=np.int64)).split(SCAN_BATCH), workers):
        hist += histograms(x)
    return hist


def histograms(x) -> np.ndarray:
    """(C, 256) counts of each uint8 value per channel of an (N, C, ...) batch."""
    x = torch.as_tensor(x)
    return np.stack([torch.bincount(x[:, c].reshape(-1), minlength=256).numpy() for c in range(x.shape[1])])


def channel_stats(hist: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the pixel values / 255, from exact histograms: the same
    float64 arithmetic on the same integers, whether the images are in memory or streamed."""
    v = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    var = np.maximum((hist * v * v).sum(1) / n - mean * mean, 0.0)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy((np.sqrt(var) + 1e-8).astype(np.float32))


def to_float(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 samples (N, C, ...) scaled to [0, 1] and standardised per channel."""
    view = (-1,) + (1,) * (x.dim() - 2)
    return x.float().div_(255.0).sub_(mean.view(view)).div_(std.view(view))


def batches(x, index_lists):
    """The rows of ``x`` for each index list in turn: indexed in memory, decoded ahead by
    DataLoader workers when ``x`` is ``ImageFiles``."""
    if isinstance(x, ImageFiles):
        return x.batches(index_lists)
    return (x[idx] for idx in index_lists)


def chunks(n: int, size: int) -> list[torch.Tensor]:
    """0..n-1 in consecutive index batches of ``size``."""
    return list(torch.arange(n).split(size))


def subset(x, idx):
    """Rows ``idx`` of ``x``: a tensor, or ``ImageFiles`` that stay on disk."""
    return x.subset(idx) if isinstance(x, ImageFiles) else x[torch.as_tensor(idx)]


__all__ = ["FileRefs", "TarRefs", "ImageFiles", "UnreadableImage", "sample_histograms", "histograms", "channel_stats",
           "to_float", "batches",
           "chunks", "subset"]
