"""Data: datasets named by spec strings (``registry``), loaded into memory as checked tensors,
or, with ``data.stream`` (or unset, when they would not fit: ``memory``), left on disk as image
files decoded per batch (``stream``).

>>> data = load_dataset(DataConfig(spec="digits"))
>>> data.x_train.shape, data.x_val.shape, data.num_classes
(torch.Size([1293, 1, 8, 8]), torch.Size([144, 1, 8, 8]), 10)

The validation split (``DataConfig.val_fraction``) is carved from the training data after
the source is read, class-stratified and seeded: training never sees it, selection reads
it, and the test split is left for reporting alone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..config import DataConfig, augment_choice
from ..errors import CkptkdError, warn
from . import sources  # noqa: F401  (each source registers itself)
from .augment import Augment, choose_augment
from .noise import Inputs, flip_labels
from .registry import list_sources, register_source, resolve
from .index import index
from .memory import choose_streaming
from .stream import ImageFiles, batches, channel_stats, chunks, histograms, sample_histograms, subset, to_float

# images decoded at load for the normalising statistics (evenly spaced over the training split):
# a mean and std from 512 images are as good as from all, and decoding all took minutes
STATS_SAMPLE = 512

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
    fingerprint: str  # sha256 of the arrays (image files: of their bytes): what caches and runs are keyed on
    view_seed: int = 0  # seeds the augmented views; shared by every model trained on this data
    x_val: torch.Tensor | ImageFiles = field(default=None)  # held out of training; empty when val_fraction is 0
    y_val: torch.Tensor = field(default=None)
    augment_why: str = "asked for"  # or "default for npz", ...: how ``augment`` was chosen

    def __post_init__(self):
        if self.x_val is None:
            self.x_val = torch.empty((0, *self.x_train.shape[1:]), dtype=torch.float32)
        if self.y_val is None:
            self.y_val = torch.empty(0, dtype=torch.int64)

    @property
    def augment_line(self) -> str:
        """The line every training prints, e.g. ``augmentation: shift (default for npz)``."""
        return f"augmentation: {self.augment.name} ({self.augment_why})"

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
        return _image_files(cfg, source, x, y, xt, yt)
    x, xt = np.asarray(x), np.asarray(xt)
    kind = source.kind or ("grid" if x.ndim == 4 else "signal")  # 4-D arrays may be photos or glyphs: no flips
    if x.ndim == 2 and xt.ndim == 2:  # plain feature vectors: one channel of length d
        x, xt = x[:, None, :], xt[:, None, :]
    _check_arrays(cfg.spec, x, y, xt, yt)
    num_classes = int(max(y.max(), yt.max())) + 1
    y, val = _noisy_labels_and_split(cfg, y, num_classes, x)
    x, y, xv, yv = x[~val], y[~val], x[val], y[val]
    if x.dtype == np.uint8:  # images: scale, then standardise per channel with the training split's stats
        mean, std = channel_stats(histograms(x))  # as the streamed path does: bitwise the same inputs
        x, xv, xt = (to_float(torch.from_numpy(np.ascontiguousarray(a)), mean, std).numpy() for a in (x, xv, xt))
    fp = hashlib.sha256()
    # an empty validation split leaves the fingerprint what it was before splits existed
    for a in (x, y, xt, yt) + ((xv, yv) if len(yv) else ()):
        fp.update(str(a.shape).encode())
        fp.update(np.ascontiguousarray(a).tobytes())
    aug, why = _augmentation(cfg, kind, x.shape[1:])
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
        x_val=torch.from_numpy(np.ascontiguousarray(xv, dtype=np.float32)),
        y_val=torch.from_numpy(yv.astype(np.int64)),
        augment_why=why,
    )


def _noisy_labels_and_split(cfg: DataConfig, y: np.ndarray, num_classes: int,
                            x: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The training labels after ``label_noise``, and the validation mask.

    The split is drawn from the labels as read, so every label_noise holds out the same
    samples; the noise then flips training and validation labels alike, as in a user's own
    noisy data (never the test labels). ``x``, the inputs of ``y`` as read, is read only by a
    kind whose flips depend on them (instance noise).
    """
    _check_classes(cfg, y, num_classes)
    val = validation_mask(cfg.spec, y, cfg.val_fraction, cfg.seed)
    if cfg.label_noise:
        y = flip_labels(y, num_classes, cfg.label_noise, cfg.seed, cfg.label_noise_kind, x)
    return y, val


def _augmentation(cfg: DataConfig, kind: str, sample_shape) -> tuple[Augment, str]:
    choice = augment_choice(cfg.augment)
    why = "asked for" if choice != "default" else f"default for {_source_name(cfg.spec)}"
    return choose_augment(choice, kind, tuple(sample_shape)), why


def stats_sample(n: int) -> np.ndarray:
    """The training images whose pixels give the normalising mean and std: all of them up to
    STATS_SAMPLE, else STATS_SAMPLE evenly spaced ones (every class, as files are class by class)."""
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.linspace(0, n - 1, STATS_SAMPLE).round().astype(np.int64)


def _image_files(cfg: DataConfig, source, x: ImageFiles, y, xt: ImageFiles, yt) -> Dataset:
    """Images on disk (image folders, shards), streamed or decoded into memory, the same either way.

    The files are listed by the source; here each split's first image is decoded (its shape), every
    file's bytes are read once (checked by their header and hashed: the fingerprint, ``index``), and
    the statistics' sample is decoded. Nothing else is decoded at load: a streamed image damaged past
    its header is found by its batch. In memory, every image is then decoded, as before.
    """
    x, xt = x.with_shape(), xt.with_shape()
    shape = x.sample_shape or xt.sample_shape
    # zero-stride stand-ins: the array checks read shapes and dtypes only
    _check_arrays(cfg.spec, np.broadcast_to(np.uint8(0), (len(x), *(x.sample_shape or shape))), y,
                  np.broadcast_to(np.uint8(0), (len(xt), *(xt.sample_shape or shape))), yt)
    stream = choose_streaming(cfg.stream, cfg.spec, len(x) + len(xt), shape)
    digest, test_digest = index(x), index(xt)
    num_classes = int(max(y.max(), yt.max())) + 1
    # instance noise reads the pixels: decoded batch by batch (uint8, as read), never all held at once
    pixels = lambda: (b.numpy() for b in x.decoded(chunks(len(x), 256), workers=cfg.workers))  # noqa: E731
    y, val = _noisy_labels_and_split(cfg, y, num_classes, pixels)
    xv, x = subset(x, np.flatnonzero(val)), subset(x, np.flatnonzero(~val))
    yv, y = y[val], y[~val]
    mean, std = channel_stats(sample_histograms(x, stats_sample(len(x)), cfg.workers))
    x, xv, xt = (replace(f, mean=mean, std=std, workers=cfg.workers) for f in (x, xv, xt))
    fp = hashlib.sha256(b"ckptkd-files-v2")  # v1 hashed the decoded pixels
    for part in (str((cfg.image_size, STATS_SAMPLE)).encode(), str(x.shape).encode(), digest,
                 y.astype(np.int64).tobytes(), str(xt.shape).encode(), test_digest, yt.astype(np.int64).tobytes(),
                 val.tobytes()):
        fp.update(part)
    if not stream:
        x, xv, xt = (_decoded(f) for f in (x, xv, xt))
    aug, why = _augmentation(cfg, source.kind or "grid", shape)
    return Dataset(name=cfg.spec, x_train=x, y_train=torch.from_numpy(y.astype(np.int64)), x_test=xt,
                   y_test=torch.from_numpy(yt.astype(np.int64)), num_classes=num_classes, augment=aug,
                   fingerprint=fp.hexdigest(), view_seed=cfg.seed, x_val=xv,
                   y_val=torch.from_numpy(yv.astype(np.int64)), augment_why=why)


def _decoded(files: ImageFiles) -> torch.Tensor:
    """Every image of ``files`` decoded (by its ``workers``) and standardised: the in-memory path."""
    out = torch.empty(tuple(files.shape), dtype=torch.float32)
    lists = chunks(len(files), 256) if len(files) else []
    for idx, xb in zip(lists, files.batches(lists)):
        out[idx] = xb
    return out


def validation_mask(spec: str, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for the ``fraction`` of the training samples held out for validation, class-stratified.

    Every class gives ``fraction`` of its samples (rounded, the remainder going to the largest
    classes), drawn with a generator seeded by ``seed``, so the split depends on the labels and
    the seed alone. Indexing with the mask keeps the original sample order in both parts.
    """
    n = len(y)
    size = int(round(fraction * n))
    val = np.zeros(n, dtype=bool)
    if size == 0:
        return val
    if size >= n:
        raise CkptkdError(f"dataset {spec!r}: data.val_fraction {fraction} leaves no training samples out of {n}; "
                          "lower it")
    rng = np.random.default_rng(seed + 104729)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * size / n).astype(int)
    for i in np.argsort(-counts, kind="stable")[: size - int(quota.sum())]:
        quota[i] += 1
    held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)])
    val[held] = True
    return val


def _source_name(spec: str) -> str:
    source, _ = resolve(spec)
    return "a dataset function" if source.arg == "function" else source.name


def _shown(values) -> str:
    values = sorted(values)
    return ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")


def _check_classes(cfg: DataConfig, y: np.ndarray, num_classes: int) -> None:
    """Labels are class indices 0..max, so a label no training sample has still gets an output.
    One or a few such labels are most often labels that start at 1: a warning. Where they
    would be most of the outputs (labels such as 0 and 1000, which are not indices at all), or
    where label noise would flip samples into them, the run cannot be what was meant: refused."""
    present = np.unique(y).tolist()
    empty = sorted(set(range(num_classes)) - set(present))
    if not empty:
        return
    k, spec = len(present), cfg.spec
    said = (f"dataset {spec!r}: the training labels are {_shown(present)} ({k} classes), yet labels go up to "
            f"{num_classes - 1}: no training sample has label {_shown(empty)}, so models get {num_classes} outputs")
    fix = f"labels must be class indices from 0 (remap them to 0..{k - 1})"
    if len(empty) > k:
        raise CkptkdError(f"{said}, most of them for no class; {fix}")
    if cfg.label_noise:
        raise CkptkdError(f"{said}, and data.label_noise would flip samples to those labels; {fix}")
    warn(f"{said}; {fix}")


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
    if y.max() < 1:  # a "classifier" of one class learns nothing, and label noise has no other class to draw
        bad("every training label is 0; a classifier needs at least 2 classes")
    if yt.max() > y.max():
        bad(f"test labels go up to {yt.max()} but train labels only to {y.max()}; the splits disagree on the classes")
