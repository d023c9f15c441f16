"""TorchScript, kept as a legacy format: PyTorch deprecates ``torch.jit`` (script, trace, save
and load all warn in torch 2.13, pointing to ``torch.export``), so ``ckptkd export`` says so in
one warning line and new deployments should use ``pt2`` or ``onnx``.

It stays because it is the one format that keeps Python control flow: ``torch.jit.script``
compiles an ``if`` on the input's values or on the batch size as an ``if``, where
``torch.export`` refuses it. A forward that scripting rejects is traced instead, which records
one path; the check against PyTorch then refuses a path it missed. torch.jit's own deprecation
warnings are silenced here: the ckptkd warning says it once, with what to use instead.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

from .base import Format, register_format

LEGACY = ("torchscript is a legacy format: PyTorch deprecates torch.jit; use --format pt2 (torch.export) or "
          "onnx, unless the forward branches on its input")


@contextlib.contextmanager
def _jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the check finds what a trace missed
        yield


def write(model: nn.Module, example: torch.Tensor) -> bytes:
    with _jit():
        try:
            compiled = torch.jit.script(model)
        except Exception:  # Python that TorchScript's compiler rejects; our check compares what tracing recorded
            compiled = torch.jit.trace(model, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(compiled, buf)
    return buf.getvalue()


def load(blob: bytes):
    with _jit():
        return torch.jit.load(io.BytesIO(blob), map_location="cpu").eval()


register_format(Format("torchscript", "TorchScript", write, load, legacy=LEGACY))
