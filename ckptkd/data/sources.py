"""The registered dataset sources: one small reader per name. Nothing is ever downloaded.

Each reader returns ``(x, y, x_test, y_test)``: numpy arrays, or ``ImageFiles`` (images
left on disk, decoded per batch) when the source streams and ``data.stream`` asks for it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import CkptkdError
from .registry import register_source


def cache_dir() -> Path:
    path = Path(os.environ.get("CKPTKD_CACHE", Path.home() / ".cache" / "ckptkd"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CkptkdError(f"cannot create the cache folder {str(path)!r} ({e.strerror}); "
                          "point CKPTKD_CACHE at a writable folder") from None
    return path


def mnist1d(num_samples: int, seed: int):
    """MNIST-1D (Greydanus 2020) generated locally; cached because generation takes seconds."""
    key = hashlib.sha256(f"mnist1d-v1-{num_samples}-{seed}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"mnist1d-{key}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return z["x"], z["y"], z["x_test"], z["y_test"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated below
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    state = np.random.get_state()  # mnist1d seeds numpy's global RNG; leave the caller's alone
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    arrays = {k: d[k] for k in ("x", "y", "x_test", "y_test")}
    arrays["x"], arrays["x_test"] = arrays["x"][:, None, :], arrays["x_test"][:, None, :]
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, cached)
    except OSError:  # a read-only or full cache only costs the next call the generation
        tmp.unlink(missing_ok=True)
    return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]


def digits(test_fraction: float, seed: int):
    """scikit-learn's bundled 8x8 digits, seeded stratified split, as (N, 1, 8, 8) images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images[:, None].astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target, test_size=test_fraction, random_state=seed, stratify=d.target
    )
    return x_tr, y_tr, x_te, y_te


def blobs(num_samples: int, test_fraction: float, seed: int):
    """A synthetic tabular task, scikit-learn's ``make_classification`` (Guyon 2003): 5 classes of
    2 Gaussian clusters each on the vertices of a hypercube, 20 features of which 12 inform,
    4 are linear mixes of those and 4 are noise; ``num_samples`` samples, the last
    ``test_fraction`` of them for test. Overlapping clusters make it hard enough that a large
    MLP memorises noisy labels instead of the clean boundary, which is what it is here for.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=num_samples, n_features=20, n_informative=12, n_redundant=4, n_classes=5,
                               n_clusters_per_class=2, class_sep=1.2, flip_y=0.0, random_state=seed)
    cut = num_samples - int(round(test_fraction * num_samples))
    return x[:cut].astype(np.float32), y[:cut], x[cut:].astype(np.float32), y[cut:]


def npz(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y", "x_test", "y_test") if k not in z.files]
            if missing:
                raise CkptkdError(f"npz file {path!r} lacks arrays {missing}; it needs x, y, x_test, y_test")
            arrays = [z[k] for k in ("x", "y", "x_test", "y_test")]
    except FileNotFoundError:
        raise CkptkdError(f"npz file {path!r} does not exist") from None
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise CkptkdError(f"npz file {path!r} cannot be read safely ({e}); save plain numeric arrays") from None
    except (OSError, EOFError) as e:
        raise CkptkdError(f"npz file {path!r} is not a readable .npz archive ({e})") from None
    return tuple(arrays)


# ---------------------------------------------------------------- the registry's entries


@register_source("mnist1d", kind="signal")
def _mnist1d(arg, cfg):
    return mnist1d(cfg.num_samples, cfg.seed)


@register_source("digits", kind="glyph")
def _digits(arg, cfg):
    return digits(cfg.test_fraction, cfg.seed)


@register_source("blobs", kind="tabular")
def _blobs(arg, cfg):
    return blobs(cfg.num_samples, cfg.test_fraction, cfg.seed)


@register_source("npz", kind=None, arg="PATH")
def _npz(arg, cfg):
    return npz(arg)


@register_source("cifar10", kind="image", arg="DIR")
def _cifar10(arg, cfg):
    from .cifar import load_cifar

    return load_cifar(arg, 10)


@register_source("cifar100", kind="image", arg="DIR")
def _cifar100(arg, cfg):
    from .cifar import load_cifar

    return load_cifar(arg, 100)


@register_source("imagefolder", kind="grid", arg="DIR", streams=True)
def _imagefolder(arg, cfg):
    from .imagefolder import list_imagefolder
    from .stream import FileRefs, ImageFiles

    paths, labels, tr, te, _ = list_imagefolder(arg, test_fraction=cfg.test_fraction, seed=cfg.seed)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    refs = FileRefs(paths)
    return ImageFiles(refs.subset(tr), size), labels[tr], ImageFiles(refs.subset(te), size), labels[te]


@register_source("webdataset", kind="grid", arg="DIR", streams=True)
def _webdataset(arg, cfg):
    from .shards import load_shards
    from .stream import ImageFiles

    tr, y, te, yt = load_shards(arg, cfg.test_fraction, cfg.seed)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    return ImageFiles(tr, size), y, ImageFiles(te, size), yt
