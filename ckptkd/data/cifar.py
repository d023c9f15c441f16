"""Read CIFAR-10 / CIFAR-100 from the official "python version" folders.

``load_cifar(directory, num_classes)`` returns ``(x_train, y_train, x_test, y_test)``
with images as uint8 ``(N, 3, 32, 32)`` and labels as int64. The official files are
pickles, and unpickling runs whatever code a file names, so they are read with
``_SafeUnpickler``, which admits containers, bytes/str/numbers and numpy arrays only.

``write_fake_cifar`` writes a tiny folder in the same format for tests.
"""
import io
import os
import pickle

import numpy as np

from ..errors import CkptkdError

_LAYOUTS = {
    # num_classes: (folder name inside a parent dir, train files, test file, label key)
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    100: ("cifar-100-python", ["train"], "test", b"fine_labels"),
}
_PIXELS = 3 * 32 * 32


def _reconstruct():
    # numpy 2 moved the module to numpy._core; files written by numpy 1 (and the
    # official Python 2 files) name numpy.core, so both names map to the one function
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _latin1_encode(text, encoding="latin1"):
    # Python 3 pickles bytes (protocol 2) as _codecs.encode(str, 'latin1'); other codecs
    # are never needed, so refuse them rather than hand an attacker the codec registry
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """Refuses every global except the few that plain numpy arrays need."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        make = _ALLOWED.get((module, name))
        if make is None:
            raise CkptkdError(
                f"{self.path}: refusing to unpickle forbidden global {module}.{name}; a "
                "CIFAR batch holds only arrays and lists, so this file is not a genuine "
                "CIFAR file (it may be malicious) - replace it with the official download"
            )
        return make()


def _read_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CkptkdError(f"{path}: cannot read ({e.strerror}); check the file permissions") from e
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), path).load()
    except CkptkdError:
        raise
    except Exception as e:  # any parse failure means a damaged or foreign file
        raise CkptkdError(
            f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the file is "
            "truncated or not from the CIFAR 'python version' archive - download it again"
        ) from e
    if not isinstance(obj, dict):
        raise CkptkdError(
            f"{path}: expected a pickled dict, got {type(obj).__name__}; this is not a "
            "CIFAR 'python version' batch file"
        )
    return obj


def _read_batch(path: str, label_key: bytes, num_classes: int):
    batch = _read_pickle(path)
    missing = [k for k in (b"data", label_key) if k not in batch]
    if missing:
        found = sorted(repr(k) for k in batch)
        raise CkptkdError(
            f"{path}: missing key(s) {', '.join(repr(k) for k in missing)} (found "
            f"{', '.join(found) or 'none'}); CIFAR-{num_classes} files need b'data' and "
            f"{label_key!r} - is this the other CIFAR variant? check num_classes"
        )
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise CkptkdError(
            f"{path}: b'data' is a {desc}, expected a uint8 array of shape (N, {_PIXELS}) "
            "(N images of 3x32x32); the file is damaged - download it again"
        )
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(data):
        raise CkptkdError(
            f"{path}: {label_key!r} must be {len(data)} integers (one per image), got "
            f"{y.dtype} values of shape {y.shape}; the file is damaged - download it again"
        )
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise CkptkdError(
            f"{path}: label {int(y[bad][0])} is outside 0..{num_classes - 1} for "
            f"num_classes={num_classes}; pass the num_classes that matches this dataset"
        )
    return data.reshape(-1, 3, 32, 32), y


def _resolve(directory: str, num_classes: int) -> str:
    """The folder holding the batch files: ``directory`` itself or its official subfolder."""
    if not os.path.isdir(directory):
        raise CkptkdError(
            f"CIFAR folder {directory!r} does not exist (or is not a folder); pass the folder that holds the "
            "extracted 'python version' files (or its parent)"
        )
    sub, train, test, _ = _LAYOUTS[num_classes]
    if not os.path.exists(os.path.join(directory, train[0])):
        nested = os.path.join(directory, sub)
        if os.path.isdir(nested):
            return nested
        other = 100 if num_classes == 10 else 10
        other_sub, other_train, _, _ = _LAYOUTS[other]
        if os.path.isdir(os.path.join(directory, other_sub)) or \
                os.path.exists(os.path.join(directory, other_train[0])):
            raise CkptkdError(
                f"{directory!r} holds CIFAR-{other} files but num_classes={num_classes}; "
                f"pass num_classes={other} or point at the CIFAR-{num_classes} folder"
            )
    return directory


def load_cifar(directory: str, num_classes: int):
    """Load CIFAR-10 (``num_classes=10``) or CIFAR-100 (``num_classes=100``).

    ``directory`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``)
    or its parent. Returns ``(x_train, y_train, x_test, y_test)``.
    """
    if num_classes not in _LAYOUTS:
        raise CkptkdError(
            f"CIFAR has 10 or 100 classes, got num_classes={num_classes}; pass 10 for "
            "CIFAR-10 or 100 for CIFAR-100"
        )
    root = _resolve(os.fspath(directory), num_classes)
    _, train, test, label_key = _LAYOUTS[num_classes]
    for name in train + [test]:
        if not os.path.isfile(os.path.join(root, name)):
            raise CkptkdError(
                f"{os.path.join(root, name)} is missing; a CIFAR-{num_classes} folder must "
                f"contain {', '.join(train + [test])} - re-extract the official archive"
            )
    parts = [_read_batch(os.path.join(root, n), label_key, num_classes) for n in train]
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    x_test, y_test = _read_batch(os.path.join(root, test), label_key, num_classes)
    return x_train, y_train, x_test, y_test


def write_fake_cifar(directory, num_classes: int, n_train: int, n_test: int, seed: int = 0):
    """Write a tiny random CIFAR-10/100 folder in the official format (for tests).

    CIFAR-10 spreads ``n_train`` over the five ``data_batch_*`` files. Returns
    ``(x_train, y_train, x_test, y_test)`` exactly as ``load_cifar`` should read them back.
    """
    if num_classes not in _LAYOUTS:
        raise CkptkdError(f"write_fake_cifar: num_classes must be 10 or 100, got {num_classes}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    _, train, test, label_key = _LAYOUTS[num_classes]
    x_train = rng.integers(0, 256, (n_train, _PIXELS), dtype=np.uint8)
    y_train = rng.integers(0, num_classes, n_train)
    x_test = rng.integers(0, 256, (n_test, _PIXELS), dtype=np.uint8)
    y_test = rng.integers(0, num_classes, n_test)

    def dump(name, obj):
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(obj, f, protocol=2)

    def batch(label, x, y):
        d = {b"batch_label": label, b"data": x, label_key: [int(v) for v in y],
             b"filenames": [b"fake_%d.png" % i for i in range(len(x))]}
        if num_classes == 100:
            d[b"coarse_labels"] = [int(v) // 5 for v in y]
        return d

    chunks = np.array_split(np.arange(n_train), len(train))
    for i, (name, idx) in enumerate(zip(train, chunks)):
        dump(name, batch(b"training batch %d of %d" % (i + 1, len(train)), x_train[idx], y_train[idx]))
    dump(test, batch(b"testing batch 1 of 1", x_test, y_test))
    if num_classes == 10:
        dump("batches.meta", {b"label_names": [b"class%d" % i for i in range(10)],
                              b"num_cases_per_batch": len(chunks[0]), b"num_vis": _PIXELS})
    else:
        dump("meta", {b"fine_label_names": [b"fine%d" % i for i in range(100)],
                      b"coarse_label_names": [b"coarse%d" % i for i in range(20)]})
    return (x_train.reshape(-1, 3, 32, 32), y_train.astype(np.int64),
            x_test.reshape(-1, 3, 32, 32), y_test.astype(np.int64))
