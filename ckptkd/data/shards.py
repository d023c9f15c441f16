"""WebDataset tar shards, indexed once so that every sample is addressable by its number.

A WebDataset shard is a plain tar whose members are grouped into samples by key: the
member path up to the first dot of the file name (``a/000017.png`` and ``a/000017.cls`` are
the sample ``a/000017``), the rest naming the field. ckptkd reads one image field (png,
jpg, jpeg, webp, bmp or ppm) and the ``cls`` field (the class as decimal text) of every
sample: what ``webdataset.ShardWriter`` writes from ``{"__key__": ..., "png": ..., "cls": ...}``.

``webdataset``'s own reader is an iterable: shards are opened in turn and samples stream
past in tar order, shuffled through a buffer if asked. It cannot hand out sample i on
demand, and a seeded per-epoch order, augmentation per (epoch, sample) and exact resume
need exactly that. So the shards are indexed with the standard library's ``tarfile`` (one
pass over the headers; the images are not read) and each image is read at its byte offset
when its batch is decoded. Samples are numbered shard by shard, shards sorted by file name,
members in tar order. Compressed shards (.tar.gz) have no offsets to seek to: use .tar.
"""
from __future__ import annotations

import os
import re
import tarfile

import numpy as np

from ..errors import CkptkdError
from .imagefolder import _split
from .stream import TarRefs

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp", "bmp", "ppm")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext


def load_shards(directory, test_fraction: float, seed: int):
    """``DIR/train/*.tar`` + ``DIR/test/*.tar`` (a fixed split), or ``DIR/*.tar`` split per class
    (seeded, as image folders are): (train refs, labels, test refs, labels)."""
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise CkptkdError(f"webdataset folder {root!r} does not exist (or is not a folder); pass the folder that "
                          "holds the .tar shards (or train/ and test/ folders of them)")
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        (tr, y), (te, yt) = _index(os.path.join(root, "train")), _index(os.path.join(root, "test"))
        return tr, y, te, yt
    refs, labels = _index(root)
    tr, te = _split(labels, test_fraction, seed)
    return refs.subset(tr), labels[tr], refs.subset(te), labels[te]


def _index(folder: str) -> tuple[TarRefs, np.ndarray]:
    shards = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".tar") and not n.startswith("."))
    if not shards:
        raise CkptkdError(f"{folder!r} holds no .tar shards; write the samples as WebDataset .tar files there")
    rows, names, labels = [], [], []
    for s, path in enumerate(shards):
        for offset, size, name, label in index_shard(path):
            rows.append((s, offset, size))
            names.append(name)
            labels.append(label)
    return TarRefs(shards, np.array(rows, dtype=np.int64).reshape(-1, 3), names), np.array(labels, dtype=np.int64)


def index_shard(path: str) -> list[tuple[int, int, str, int]]:
    """(image byte offset, image size, member name, label) of every sample of one shard, in tar order."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        end = os.path.getsize(path)
        with tarfile.open(path, "r:") as tar:  # "r:": uncompressed, so members sit at fixed offsets
            for m in tar:
                match = _KEY.match(m.name) if m.isfile() else None
                if match:  # files without an extension belong to no sample (webdataset skips them too)
                    samples.setdefault(match[1], {})[match[2].lower()] = m
            out = []
            for key, fields in samples.items():
                out.append(_sample(path, tar, key, fields, end))
    except (tarfile.TarError, EOFError) as e:
        raise CkptkdError(f"shard {path!r} is not a readable uncompressed tar file ({e or type(e).__name__}); "
                          "write shards as plain .tar") from None
    except OSError as e:
        raise CkptkdError(f"shard {path!r} cannot be read ({e.strerror or e})") from None
    if not out:
        raise CkptkdError(f"shard {path!r} holds no samples; remove it, or write samples (an image and a .cls) to it")
    return out


def _sample(path: str, tar: tarfile.TarFile, key: str, fields: dict, end: int) -> tuple[int, int, str, int]:
    image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
    if image is None:
        raise CkptkdError(f"sample {key!r} of shard {path!r} has no image ({', '.join(IMAGE_FIELDS)}); "
                          "every sample needs one")
    if "cls" not in fields:
        raise CkptkdError(f"sample {key!r} of shard {path!r} has no .cls label; every sample needs its class "
                          "number as a .cls member")
    if image.offset_data + image.size > end:
        raise tarfile.ReadError(f"member {image.name!r} runs past the end of the file")
    text = tar.extractfile(fields["cls"]).read()
    try:
        label = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise CkptkdError(f"sample {key!r} of shard {path!r}: its .cls holds {text[:20]!r}, not a class "
                          "number") from None
    return image.offset_data, image.size, image.name, label
