"""Read a class-per-subfolder image dataset (``DIR/<class>/<image>``) with Pillow.

``load_imagefolder`` returns ``(x_train, y_train, x_test, y_test, class_names)`` with
images as uint8 ``(N, 3, H, W)`` RGB and labels as int64 indices into the sorted
``class_names``. ``DIR/train`` + ``DIR/test`` (both class-per-folder) give a fixed split;
otherwise each class is split at random (seeded) so both sides keep every class.
Hidden files and folders (``.name``) are skipped; plain files directly in ``DIR`` are not
part of the class layout and are ignored, as in torchvision's ``ImageFolder``.
"""
import os

import numpy as np
from PIL import Image

from ..errors import CkptkdError


def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def _scan(folder: str) -> dict:
    """Map each class subfolder of ``folder`` to its image paths (searched recursively)."""
    classes = {}
    for name in _visible(os.listdir(folder)):
        cdir = os.path.join(folder, name)
        if not os.path.isdir(cdir):
            continue
        paths = _files_under(cdir)
        if not paths:
            raise CkptkdError(
                f"class folder {cdir!r} has no images; add images or remove the folder"
            )
        classes[name] = paths
    if not classes:
        raise CkptkdError(
            f"{folder!r} has no class subfolders; expected one folder per class, "
            f"like {os.path.join(folder, '<class>', '<image>.png')}"
        )
    return classes


def _files_under(folder: str) -> list[str]:
    """The visible files under ``folder``, as ``os.walk`` lists them (each folder's files by name,
    then its subfolders by name, symlinked folders not entered), from ``os.scandir`` entries: no
    stat or path join per file, which 100,000 images make worth it."""
    files, folders = [], []
    for entry in sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name):
        if not entry.is_dir():
            files.append(entry.path)
        elif not entry.is_symlink():
            folders.append(entry.path)
    for sub in folders:
        files += _files_under(sub)
    return files


def _read(path: str, size):
    return decode(path, size, path, "remove it from the dataset folder or rename it to start with '.' to hide it")


def decode(source, size, name: str, remedy: str) -> np.ndarray:
    """One image (a path or a file object) as uint8 (H, W, 3) RGB, resized to ``size`` (H, W)."""
    try:
        with Image.open(source) as im:
            im = im.convert("RGB")  # convert() forces the decode inside the try
    except Exception as e:  # Pillow raises many types for foreign or damaged files
        raise CkptkdError(f"{name}: not a readable image ({type(e).__name__}: {e}); {remedy}") from e
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)  # writable: torch.from_numpy wants that


def _size(size):
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise CkptkdError(f"size must be None, an int, or (H, W) positive ints, got {size!r}")
    return hw


def _split(labels: np.ndarray, test_fraction: float, seed: int):
    """Per-class seeded split; every class keeps at least one training image."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = min(int(round(len(idx) * test_fraction)), len(idx) - 1)
        test += list(rng.permutation(idx)[:n_test])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def load_imagefolder(directory, size=None, test_fraction: float = 0.2, seed: int = 0):
    """Load ``DIR/<class>/*`` (or ``DIR/{train,test}/<class>/*``) as uint8 arrays.

    ``size`` is ``(H, W)`` (or an int for square) to resize every image to; without it
    all images must already share one size. ``test_fraction`` and ``seed`` apply only
    when there is no ``train``/``test`` split on disk.
    """
    size = _size(size)
    paths, labels, tr, te, names = list_imagefolder(directory, test_fraction, seed)
    images = [_read(p, size) for p in paths]
    first = images[0].shape
    for p, im in zip(paths, images):
        if im.shape != first:
            raise CkptkdError(
                f"images differ in size: {paths[0]} is {first[1]}x{first[0]} but {p} is "
                f"{im.shape[1]}x{im.shape[0]} (WxH); pass size=(H, W) to resize them all"
            )
    x = np.stack(images).transpose(0, 3, 1, 2)
    x_train, x_test = np.ascontiguousarray(x[tr]), np.ascontiguousarray(x[te])
    return x_train, labels[tr], x_test, labels[te], names


def list_imagefolder(directory, test_fraction: float = 0.2, seed: int = 0):
    """The image paths of ``DIR`` with their labels, the train and test positions in that
    list, and the class names: everything but the pixels (``load_imagefolder``'s layout)."""
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise CkptkdError(
            f"image folder {root!r} does not exist (or is not a folder); pass the folder "
            "that holds one subfolder per class"
        )
    if not 0 <= test_fraction < 1:
        raise CkptkdError(f"test_fraction must be in [0, 1), got {test_fraction}")
    has = {s: os.path.isdir(os.path.join(root, s)) for s in ("train", "test")}
    if has["train"] and has["test"]:
        train, test = _scan(os.path.join(root, "train")), _scan(os.path.join(root, "test"))
        if set(train) != set(test):
            only_tr, only_te = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            raise CkptkdError(
                f"{root!r}: train and test must have the same class folders (only in train: "
                f"{only_tr or 'none'}; only in test: {only_te or 'none'}); add or remove "
                "folders so both match"
            )
        names = sorted(train)
        paths = [p for n in names for p in train[n]] + [p for n in names for p in test[n]]
        labels = np.array([i for i, n in enumerate(names) for _ in train[n]]
                          + [i for i, n in enumerate(names) for _ in test[n]], dtype=np.int64)
        n_train = sum(len(train[n]) for n in names)
        tr, te = np.arange(n_train), np.arange(n_train, len(paths))
    else:
        if has["train"] or has["test"]:
            found, lacking = ("train", "test") if has["train"] else ("test", "train")
            raise CkptkdError(
                f"{root!r} has a {found!r} folder but no {lacking!r} folder; add "
                f"{os.path.join(root, lacking)} for a fixed split, or use class folders "
                "directly under the root for a random split"
            )
        classes = _scan(root)
        names = sorted(classes)
        paths = [p for n in names for p in classes[n]]
        labels = np.array([i for i, n in enumerate(names) for _ in classes[n]], dtype=np.int64)
        tr, te = _split(labels, test_fraction, seed)

    return paths, labels, tr, te, names
