"""pt2: PyTorch's own deployable program, ``torch.export.export`` saved with ``torch.export.save``
(the ``.pt2`` archive). The check loads it back with ``torch.export.load`` and runs its
``.module()``; a deployment does the same, or compiles it ahead of time (AOTInductor).
"""
from __future__ import annotations

import io

import torch
from torch import nn

from .base import Format, program, quiet_exporter, register_format


def write(model: nn.Module, example: torch.Tensor) -> bytes:
    graph = program(model, example)
    buf = io.BytesIO()
    with quiet_exporter():
        torch.export.save(graph, buf)
    return buf.getvalue()


def load(blob: bytes):
    with quiet_exporter():
        return torch.export.load(io.BytesIO(blob)).module()


register_format(Format("pt2", "torch.export", write, load))
