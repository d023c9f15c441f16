"""The format registry and what the formats share; each format's file imports this module and
registers itself (the package imports the files), so no import goes round a circle."""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ...errors import CkptkdError, closest


class CannotExport(Exception):
    """The format cannot capture this model's forward; ``reason`` says why, in words."""


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str  # what runs the exported file, in the check and in deployment
    write: Callable[[nn.Module, torch.Tensor], bytes]  # (model in eval mode, example batch) -> the file's bytes
    load: Callable[[bytes], Callable[[torch.Tensor], torch.Tensor]]  # the file's bytes -> a batch -> logits
    legacy: str | None = None  # why the format is on its way out, said once per export (a ckptkd warning)


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise CkptkdError(f"unknown export format {name!r}{closest(name, FORMATS)}; use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def need(module: str, fmt: str, packages: str):
    """Import ``module``, or say which extra the format ``fmt`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CkptkdError(f"{fmt} export needs the packages {packages} ({module} is missing); "
                          "pip install 'ckptkd[export]'") from None


@contextlib.contextmanager
def quiet_exporter():
    """Silence what torch's exporters say about their own internals while they run: FutureWarnings
    and DeprecationWarnings raised inside torch (e.g. torch.utils._pytree's ``LeafSpec``) and the
    log lines of torch.onnx (e.g. "torchvision is not installed"). Warnings raised from ckptkd's
    own calls still pass (and are errors under pytest, see pyproject.toml)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo",
                                                    "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(?!ckptkd)")
        try:
            for lg in loggers:
                lg.setLevel(logging.CRITICAL)
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` as one ``torch.export`` graph whose batch dimension stays dynamic (from 1 up);
    ``CannotExport`` when its forward depends on what a graph cannot keep."""
    batch = torch.export.Dim("batch", min=1)
    dump = io.StringIO()  # on failure torch.export prints the partial graph to stderr; the one line says enough
    try:
        with quiet_exporter(), contextlib.redirect_stderr(dump):
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as e:  # torch.export has many error types; all mean "not this model"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "data-dependent" in first.lower():
            raise CannotExport("its forward branches on its input's values (torch.export: data-dependent "
                               "control flow)") from None
        if "Constraints violated (batch)" in first:
            raise CannotExport("its forward depends on the batch size, which the export keeps dynamic "
                               "(torch.export: constraints violated)") from None
        raise CannotExport(f"torch.export cannot capture its forward ({type(e).__name__}: {first[:160]})") from None

