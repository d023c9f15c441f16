"""Data: datasets named by spec strings, loaded into memory as checked tensors.

>>> data = load_dataset(DataConfig(spec="digits"))
>>> data.x_train.shape, data.x_val.shape, data.num_classes
(torch.Size([1293, 1, 8, 8]), torch.Size([144, 1, 8, 8]), 10)

The validation split (``DataConfig.val_fraction``) is carved from the training data after
the source is read, class-stratified and seeded: training never sees it, selection reads
it, and the test split is left for reporting alone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import DataConfig, augment_choice
from ..errors import CkptkdError, closest, warn
from . import sources
from .augment import Augment, choose_augment

__all__ = ["Dataset", "load_dataset", "Augment", "DATASETS"]

DATASETS = ("mnist1d", "digits", "npz:PATH", "cifar10:DIR", "cifar100:DIR", "imagefolder:DIR", "module.path:function")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # float32 (N, C, L) or (N, C, H, W)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: Augment
    fingerprint: str  # sha256 of the arrays: what a cached teacher output or analysis is keyed on
    view_seed: int = 0  # seeds the augmented views; shared by every model trained on this data
    x_val: torch.Tensor = field(default=None)  # held out of training; empty when val_fraction is 0
    y_val: torch.Tensor = field(default=None)
    augment_why: str = "asked for"  # or "default for npz", ...: how ``augment`` was chosen

    def __post_init__(self):
        if self.x_val is None:
            self.x_val = torch.empty((0, *self.x_train.shape[1:]), dtype=self.x_train.dtype)
        if self.y_val is None:
            self.y_val = torch.empty(0, dtype=torch.int64)

    @property
    def augment_line(self) -> str:
        """The line every training prints, e.g. ``augmentation: shift (default for npz)``."""
        return f"augmentation: {self.augment.name} ({self.augment_why})"

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _read(cfg: DataConfig):
    spec = cfg.spec
    kind, _, arg = spec.partition(":")
    if spec == "mnist1d":
        return sources.mnist1d(cfg.num_samples, cfg.seed)
    if spec == "digits":
        return sources.digits(cfg.test_fraction, cfg.seed)
    if kind == "npz" and arg:
        return sources.npz(arg)
    if kind in ("cifar10", "cifar100") and arg:
        from .cifar import load_cifar

        return (*load_cifar(arg, 10 if kind == "cifar10" else 100), "image")
    if kind == "imagefolder" and arg:
        from .imagefolder import load_imagefolder

        size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
        x, y, xt, yt, _ = load_imagefolder(arg, size=size, test_fraction=cfg.test_fraction, seed=cfg.seed)
        return x, y, xt, yt, "grid"  # photos, glyphs, scans: ckptkd cannot tell, so it never flips them
    if arg and kind not in ("npz", "cifar10", "cifar100", "imagefolder"):
        return sources.user_function(spec)
    names = ["mnist1d", "digits", "npz", "cifar10", "cifar100", "imagefolder"]
    raise CkptkdError(f"unknown dataset {spec!r}{closest(kind, names)}; use one of {', '.join(DATASETS)}")


def load_dataset(cfg: DataConfig | str) -> Dataset:
    """Load and check the dataset named by ``cfg.spec`` (a spec string works too)."""
    if isinstance(cfg, str):
        cfg = DataConfig(spec=cfg)
    x, y, xt, yt, kind = _read(cfg)
    x, y, xt, yt = (np.asarray(a) for a in (x, y, xt, yt))
    if x.ndim == 2 and xt.ndim == 2:  # plain feature vectors: one channel of length d
        x, xt = x[:, None, :], xt[:, None, :]
    _check_arrays(cfg.spec, x, y, xt, yt)
    num_classes = int(max(y.max(), yt.max())) + 1
    _warn_empty_classes(cfg.spec, y, num_classes)
    # the split is drawn from the labels as read, so every label_noise holds out the same samples;
    # the noise then flips training and validation labels alike, as in a user's own noisy data
    val = validation_mask(cfg.spec, y, cfg.val_fraction, cfg.seed)
    if cfg.label_noise:
        y = flip_labels(y, num_classes, cfg.label_noise, cfg.seed)
    x, y, xv, yv = x[~val], y[~val], x[val], y[val]
    if x.dtype == np.uint8:  # images: scale, then standardise per channel with training stats
        x, xv, xt = (a.astype(np.float32) / 255.0 for a in (x, xv, xt))
        axes = (0,) + tuple(range(2, x.ndim))
        mean, std = x.mean(axes, keepdims=True), x.std(axes, keepdims=True) + 1e-8
        x, xv, xt = ((a - mean) / std for a in (x, xv, xt))
    fp = hashlib.sha256()
    # an empty validation split leaves the fingerprint what it was before splits existed
    for a in (x, y, xt, yt) + ((xv, yv) if len(yv) else ()):
        fp.update(str(a.shape).encode())
        fp.update(np.ascontiguousarray(a).tobytes())
    choice = augment_choice(cfg.augment)
    aug = choose_augment(choice, kind, x.shape[1:])
    why = "asked for" if choice != "default" else f"default for {_source_name(cfg.spec)}"
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
    kind, _, arg = spec.partition(":")
    if not arg or kind in ("npz", "cifar10", "cifar100", "imagefolder"):
        return kind
    return "a dataset function"


def flip_labels(y: np.ndarray, num_classes: int, share: float, seed: int) -> np.ndarray:
    """Replace ``share`` of the labels by a uniformly drawn *other* class (symmetric noise)."""
    rng = np.random.default_rng(seed + 7919)
    y = y.copy()
    picked = rng.choice(len(y), size=int(round(share * len(y))), replace=False)
    y[picked] = (y[picked] + rng.integers(1, num_classes, size=len(picked))) % num_classes
    return y


def _warn_empty_classes(spec: str, y: np.ndarray, num_classes: int) -> None:
    """Labels are class indices 0..max: a class no training sample has is most often labels
    that start at 1, and the model would still get (and never learn) an output for it."""
    empty = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        warn(f"dataset {spec!r}: no training sample has label {shown}, yet labels go up to {num_classes - 1}, "
             f"so models get {num_classes} outputs; labels must be class indices from 0")


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
