"""Images on disk checked and fingerprinted from their bytes, without decoding them.

Reading a small image file costs tens of microseconds; decoding it costs far more (for
100,000 images, the full decode at load took 252 s). So the load reads each file's
bytes once, hashes them (the dataset's fingerprint: it changes when any image's bytes do),
and looks at the header it already holds:

- bytes that start like no image format ckptkd knows (an empty file, a text file, an
  archive) are given to Pillow at once, so a file Pillow cannot read fails the load with
  Pillow's own message, as when every image was decoded; a format this list lacks but
  Pillow reads merely costs that decode;
- a PNG's size is in its IHDR chunk, 16 bytes in: without ``data.image_size`` a PNG of
  another size than the split's first image fails the load too.

What only a decode can find (a file damaged past its header, a JPEG of another size) is
found by the batch that decodes it (``stream.UnreadableImage``), with the same message.
"""
from __future__ import annotations

import hashlib
import struct

from .imagefolder import decode
from .stream import ImageFiles, size_error

PNG = b"\x89PNG\r\n\x1a\n"
# the leading bytes of the formats Pillow reads that image datasets hold (PIL's own _accept checks)
SIGNATURES = (PNG, b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
              b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"\x00\x00\x01\x00")


def looks_like_an_image(data: bytes) -> bool:
    return data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) of a PNG from its IHDR chunk; None for any other format."""
    if data.startswith(PNG) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    return None


def index(files: ImageFiles) -> bytes:
    """The sha256 of every image's bytes, in sample order, each checked by its header on the way:
    (``files.with_shape()`` first, so that a PNG of another size than the first is refused)."""
    digest = hashlib.sha256()
    first = files.sample_shape[1:] if files.size is None and files.sample_shape else None
    for i, data in enumerate(files.refs.contents()):
        if data is None or not looks_like_an_image(data):
            decode(files.refs.open(i), files.size, files.refs.name(i), files.refs.remedy)  # raises, as a load did
            data = data or b""
        elif first is not None and png_size(data) not in (None, first):
            raise size_error(files.refs, 0, i)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()
