"""Snapshot ensembles in one pass: K checkpoints of one architecture, vmapped.

Checkpoints of one run share an architecture, so their K weight sets can be stacked
(``torch.func.stack_module_state``) and evaluated by one ``functional_call`` under
``vmap``: convolutions become grouped convolutions, matmuls batched ones, and K small
kernel launches become one. Whether that beats a plain loop depends on the device:

* CPU (measured, ``benchmarks/bench_vmap.py``, docs/benchmarks.md): the loop wins for
  every K and model measured; the grouped kernels are slower than K dense ones.
* CUDA: small models are launch-bound, which is the case vmap removes; ``auto`` uses it.

``auto`` is a fixed rule, not a timing taken at run time, so the choice (and with it the
last bits of the teacher's outputs) is the same in every run.
"""
from __future__ import annotations

import copy

import torch
from torch.func import functional_call, stack_module_state, vmap

from .errors import CkptkdError

MODES = ("auto", "loop", "vmap")


def same_architecture(members) -> bool:
    """True when every member has the first one's class, parameter and buffer shapes."""
    def shapes(m):
        return type(m), [(k, v.shape, v.dtype) for k, v in m.state_dict().items()]

    first = shapes(members[0])
    return all(shapes(m) == first for m in members[1:])


def use_vmap(mode: str, members, device: torch.device) -> bool:
    """Whether ``mode`` means the vmapped pass for these members on ``device``."""
    if mode not in MODES:
        raise CkptkdError(f"ensemble mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "loop" or len(members) < 2 or (mode == "auto" and device.type != "cuda"):
        return False
    if same_architecture(members):
        return True
    if mode == "vmap":
        raise CkptkdError("ensemble='vmap' needs members of one architecture; use 'loop' or 'auto'")
    return False


class StackedEnsemble:
    """K same-architecture modules evaluated in one vmapped call, returning (K, B, C).

    The stacked weights are copies taken at construction: build it after the members are
    loaded and moved, and build a new one if they change.
    """

    def __init__(self, members):
        self.params, self.buffers = stack_module_state(list(members))
        # a weightless skeleton of the architecture; the stacked tensors are passed in per call
        self.base = copy.deepcopy(members[0]).to("meta")
        self.base.eval()

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._call = vmap(one, in_dims=(0, 0, None))

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.params, self.buffers, x)


def loop_logits(members, x: torch.Tensor) -> torch.Tensor:
    """(K, B, C) logits by one forward per member: the reference the vmapped pass must match."""
    with torch.no_grad():
        return torch.stack([m(x).float() for m in members])
