"""Data: datasets named by spec strings (``registry``), loaded into memory as checked tensors,
or, with ``data.stream``, left on disk as image files decoded per batch (``stream``).

>>> data = load_dataset(DataConfig(spec="digits"))
>>> data.x_train.shape, data.num_classes
(torch.Size([1437, 1, 8, 8]), 10)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import DataConfig
from ..errors import CkptkdError
from .augment import Augment, default_augment
from .registry import list_sources, register_source, resolve
from .stream import ImageFiles, batches, channel_stats, chunks, histograms, scan, size_error, subset, to_float

__all__ = ["Dataset", "load_dataset", "Augment", "DATASETS", "ImageFiles", "register_source", "list_sources",
           "batches", "subset"]


def __getattr__(name):  # DATASETS: what the registry holds when asked, user-registered sources included
    if name == "DATASETS":
        return tuple(s.usage for s in list_sources())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor | ImageFiles  # float32 (N, C, L) or (N, C, H, W); ImageFiles: decoded per batch
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor | ImageFiles
    y_test: torch.Tensor
    num_classes: int
    augment: Augment
    fingerprint: str  # sha256 of the arrays: what a cached teacher output or analysis is keyed on
    view_seed: int = 0  # seeds the augmented views; shared by every model trained on this data

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def streaming(self) -> bool:
        return isinstance(self.x_train, ImageFiles)

    def batches(self, index_lists):
        """The training inputs (not augmented) of each index list in turn: indexed in
        memory, or decoded a few batches ahead by DataLoader workers when streaming."""
        return batches(self.x_train, index_lists)


def load_dataset(cfg: DataConfig | str) -> Dataset:
    """Load and check the dataset named by ``cfg.spec`` (a spec string works too)."""
    if isinstance(cfg, str):
        cfg = DataConfig(spec=cfg)
    source, arg = resolve(cfg.spec)
    if cfg.stream and not source.streams:
        raise CkptkdError(f"data.stream needs a source that can leave its images on disk "
                          f"({', '.join(s.usage for s in list_sources() if s.streams)}), not {cfg.spec!r}")
    x, y, xt, yt = source.read(arg, cfg)
    y, yt = np.asarray(y), np.asarray(yt)
    if isinstance(x, ImageFiles):
        if cfg.stream:
            return _streamed(cfg, source, x, y, xt, yt)
        x, xt = _materialise(x, cfg.workers), _materialise(xt, cfg.workers)
    x, xt = np.asarray(x), np.asarray(xt)
    kind = source.kind or ("image" if x.ndim == 4 else "signal")
    if x.ndim == 2 and xt.ndim == 2:  # plain feature vectors: one channel of length d
        x, xt = x[:, None, :], xt[:, None, :]
    _check_arrays(cfg.spec, x, y, xt, yt)
    if x.dtype == np.uint8:  # images: scale, then standardise per channel with training stats
        mean, std = channel_stats(histograms(x))  # as the streamed path does: bitwise the same inputs
        x, xt = (to_float(torch.from_numpy(np.ascontiguousarray(a)), mean, std).numpy() for a in (x, xt))
    num_classes = int(max(y.max(), yt.max())) + 1
    if cfg.label_noise:
        y = flip_labels(y, num_classes, cfg.label_noise, cfg.seed)
    fp = hashlib.sha256()
    for a in (x, y, xt, yt):
        fp.update(str(a.shape).encode())
        fp.update(np.ascontiguousarray(a).tobytes())
    aug = default_augment(kind, x.shape[1:]) if cfg.augment else Augment()
    return Dataset(
        name=cfg.spec,
        x_train=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y_train=torch.from_numpy(y.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(xt, dtype=np.float32)),
        y_test=torch.from_numpy(yt.astype(np.int64)),
        num_classes=num_classes,
        augment=aug,
        fingerprint=fp.hexdigest(),
        view_seed=cfg.seed,
    )


def _streamed(cfg: DataConfig, source, x: ImageFiles, y, xt: ImageFiles, yt) -> Dataset:
    """The dataset with its images left on disk: one pass decodes each image once, to check
    it and to take the normalising statistics and the fingerprint; none is kept."""
    x, hist, digest = scan(x, cfg.workers)
    xt, _, test_digest = scan(xt, cfg.workers)
    shape = x.sample_shape or xt.sample_shape
    # zero-stride stand-ins: the array checks read shapes and dtypes only
    _check_arrays(cfg.spec, np.broadcast_to(np.uint8(0), (len(x), *shape)), y,
                  np.broadcast_to(np.uint8(0), (len(xt), *shape)), yt)
    num_classes = int(max(y.max(), yt.max())) + 1
    if cfg.label_noise:
        y = flip_labels(y, num_classes, cfg.label_noise, cfg.seed)
    mean, std = channel_stats(hist)
    x = replace(x, mean=mean, std=std, workers=cfg.workers)
    xt = replace(xt, sample_shape=shape, mean=mean, std=std, workers=cfg.workers)
    fp = hashlib.sha256(b"ckptkd-stream-v1")
    for part in (str(x.shape).encode(), digest, y.astype(np.int64).tobytes(), str(xt.shape).encode(), test_digest,
                 yt.astype(np.int64).tobytes()):
        fp.update(part)
    aug = default_augment(source.kind or "image", shape) if cfg.augment else Augment()
    return Dataset(name=cfg.spec, x_train=x, y_train=torch.from_numpy(y.astype(np.int64)), x_test=xt,
                   y_test=torch.from_numpy(yt.astype(np.int64)), num_classes=num_classes, augment=aug,
                   fingerprint=fp.hexdigest(), view_seed=cfg.seed)


def _materialise(files: ImageFiles, workers: int) -> np.ndarray:
    """Every image of ``files`` decoded into one uint8 (N, C, H, W) array (the in-memory path)."""
    out, lists = None, chunks(len(files), 256)
    for idx, xb in zip(lists, files.decoded(lists, workers)):
        if out is None:
            out = np.empty((len(files), *xb.shape[1:]), dtype=np.uint8)
        elif tuple(xb.shape[1:]) != out.shape[1:]:
            raise size_error(files.refs, 0, int(idx[0]))
        out[idx.numpy()] = xb.numpy()
    return out if out is not None else np.zeros((0, 3, 1, 1), dtype=np.uint8)


def flip_labels(y: np.ndarray, num_classes: int, share: float, seed: int) -> np.ndarray:
    """Replace ``share`` of the labels by a uniformly drawn *other* class (symmetric noise)."""
    rng = np.random.default_rng(seed + 7919)
    y = y.copy()
    picked = rng.choice(len(y), size=int(round(share * len(y))), replace=False)
    y[picked] = (y[picked] + rng.integers(1, num_classes, size=len(picked))) % num_classes
    return y


def _check_arrays(spec: str, x, y, xt, yt) -> None:
    def bad(msg: str):
        raise CkptkdError(f"dataset {spec!r}: {msg}")

    for name, a, labels in (("train", x, y), ("test", xt, yt)):
        if a.shape[0] == 0:
            bad(f"the {name} split is empty; give at least one sample per split")
        if a.shape[0] != labels.shape[0]:
            bad(f"{name} has {a.shape[0]} inputs but {labels.shape[0]} labels")
        if a.ndim not in (3, 4):
            bad(f"{name} inputs must be (N, C, L) or (N, C, H, W), got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a)):
            bad(f"{name} inputs have dtype {a.dtype}; use a real numeric dtype")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad(f"{name} inputs contain NaN or infinite values; clean or impute them first")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            bad(f"{name} labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if labels.size and labels.min() < 0:
            bad(f"{name} labels must be >= 0, found {labels.min()}")
    if x.shape[1:] != xt.shape[1:]:
        bad(f"train inputs {x.shape[1:]} and test inputs {xt.shape[1:]} differ in shape")
    if yt.max() > y.max():
        bad(f"test labels go up to {yt.max()} but train labels only to {y.max()}; the splits disagree on the classes")
