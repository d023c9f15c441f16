"""The export formats, one file each, registered by name; importing this package registers them
in order (the order of the ``--format`` choices).

A format turns the student (in eval mode, with an example batch of two) into the file's bytes,
and turns those bytes back into something that runs a batch: the runtime a deployment would
use. A forward that a format cannot capture raises ``CannotExport``, which ``ckptkd export``
turns into one line naming the format that would work.

``pt2`` and ``onnx`` both start from ``torch.export`` (``program`` below): one graph with a
dynamic batch dimension, so that a forward that branches on its input's values or on the
batch size is refused at export, rather than captured for one branch.
"""
from __future__ import annotations

from .base import (FORMATS, CannotExport, Format, get_format, need, program, quiet_exporter,  # noqa: F401
                   register_format)
from . import onnx, pt2, torchscript  # noqa: E402,F401  (registers them, in this order)
