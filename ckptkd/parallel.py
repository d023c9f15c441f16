"""Data-parallel training under torchrun, on PyTorch's own engine.

``torchrun --nproc_per_node N -m ckptkd train ...`` starts N copies of the command with
RANK, WORLD_SIZE and LOCAL_RANK set. ``world()`` joins them into one process group (gloo
for CPU tensors, nccl for CUDA ones) and ``fit`` wraps the model in
DistributedDataParallel. Every rank draws the same permutation and takes an equal slice
of each *global* batch of ``batch_size`` samples; DDP averages the gradients, so N
processes take the optimizer steps of one process with the same ``batch_size`` (up to
float summation order, and BatchNorm, which normalises each rank's slice on its own
unless it is synchronised: ``wrap`` does that on CUDA). Only rank 0 writes files.

Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) every helper here is a no-op.
"""
from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import CkptkdError


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device) -> torch.device:
        """``device`` as this rank should use it: CUDA ranks each get their own GPU."""
        device = torch.device(device)
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


def world() -> World:
    """The job this process belongs to; joins the process group on the first call under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    me = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(me.local_rank)
        # one group that serves CPU tensors (metrics, the CPU device) and CUDA tensors alike
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        _end_at_exit()
    return me


def leave() -> None:
    """Destroy the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def finish(code: int = 0) -> None:
    """End this rank of a torchrun job: leave the process group, flush, and exit with ``code``
    without interpreter teardown. Returns at once when there is no process group.

    Why: DDP keeps the group, and with it gloo's worker threads, alive past
    ``destroy_process_group``. A worker that drops the last collective's work (its tensors
    have Python objects) after interpreter teardown began must take the GIL; Python answers
    with pthread_exit, whose unwinding through a C++ destructor aborts the rank: "terminate
    called without an active exception" (seen in a core dump). The CLI ends every command
    here, and so does a script of the Python API at its exit, without calling it (``_end_at_exit``).
    """
    if not dist.is_initialized():
        return
    leave()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ------------------------------------------------------------ the rank's end, when a script does not call finish

_status: list[int] = []  # the status sys.exit was asked for, once it is
_after_join: list = []  # atexit handlers registered after this process joined: they run before ours (LIFO)


def _end_at_exit() -> None:
    """Make a script that joined the process group end its rank as ``finish`` does, without
    calling it: an atexit handler that runs the other atexit handlers, then ``finish`` with
    the status the interpreter would have exited with.

    An atexit handler cannot see that status, so it is pieced together: an uncaught exception
    leaves ``sys.last_type`` (status 1, or 130 for KeyboardInterrupt, as Python would exit),
    ``sys.exit`` records its argument, and a script that runs off its end exits 0.
    (``raise SystemExit(n)`` written out is not seen and ends 0: such a script should use
    ``sys.exit(n)`` or ``finish(n)``.) Handlers registered before the join have not run when
    ours does (atexit runs the latest first), so ours runs them; those registered after it
    have run, and are not run again.
    """
    real_exit, real_register = sys.exit, atexit.register

    def exit_(status=None):
        _status[:] = [0 if status is None else status if isinstance(status, int) else 1]
        real_exit(status)

    def register(func, *args, **kwargs):
        _after_join.append(func)
        return real_register(func, *args, **kwargs)

    sys.exit, atexit.register = exit_, register
    real_register(_exit_rank)


def _exit_status() -> int:
    uncaught = getattr(sys, "last_type", None)  # set by Python for the exception that ended the script
    if uncaught is not None:
        return 130 if issubclass(uncaught, KeyboardInterrupt) else 1
    return _status[0] if _status else 0


def _exit_rank() -> None:
    if not dist.is_initialized():  # the script left the group itself
        return
    for func in [*_after_join, _exit_rank]:
        atexit.unregister(func)
    atexit._run_exitfuncs()  # the handlers registered before the join, while the interpreter is whole
    _flush_open_files()  # finish skips the teardown that would have flushed files the script left open
    finish(_exit_status())


def _flush_open_files() -> None:
    import gc
    import io

    for f in gc.get_objects():
        if isinstance(f, io.IOBase):
            try:
                if not f.closed and f.writable():
                    f.flush()
            except (OSError, ValueError):  # one that cannot be flushed now would not have been at teardown either
                pass


def wrap(model: nn.Module, w: World, device: torch.device) -> nn.Module:
    """``model`` as the training loop should call it: itself, or its DDP wrapper."""
    if not w.distributed:
        return model
    if device.type == "cuda":  # CPU tensors have no SyncBatchNorm in PyTorch
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch: torch.Tensor, w: World) -> torch.Tensor:
    """This rank's slice of a global batch of sample indices (sizes differ by at most one)."""
    return batch[w.rank::w.size] if w.distributed else batch


def keep_samples(n: int, batch_size: int, w: World) -> int:
    """How many samples of an epoch to train on: a last batch too small to give every rank
    two samples (BatchNorm needs two) is dropped. One process drops only a last batch of one."""
    tail = n % batch_size
    return n - tail if 0 < tail < 2 * w.size else n


def all_sum(values: list[float], w: World) -> list[float]:
    """Sum of ``values`` over the ranks (the epoch's loss, correct and seen counts)."""
    if not w.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: nn.Module, w: World) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so all ranks hold one model."""
    if w.distributed:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


def on_main(fn, w: World | None = None):
    """Run ``fn`` on rank 0 only. Its result stays on rank 0 (the others get None); a
    ``CkptkdError`` it raises is raised on every rank, so no rank waits for a dead one."""
    w = w or world()
    if not w.distributed:
        return fn()
    result, error = None, None
    if w.is_main:
        try:
            result = fn()
        except CkptkdError as e:
            error = str(e)
    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CkptkdError(box[0])
    return result


def share(value, w: World | None = None):
    """Rank 0's ``value`` (any picklable object), on every rank."""
    w = w or world()
    if not w.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn, then=None, w: World | None = None):
    """Run ``fn`` on rank 0, then ``then`` (default ``fn``) on the others: for work that rank 0
    writes and the others then find done (a teacher cache, a run folder to read), so it is
    done once, not N times."""
    w = w or world()
    result = on_main(fn, w)
    barrier(w)
    return result if w.is_main else (then or fn)()


def main_only(fn, w: World | None = None):
    """Run ``fn`` on rank 0 alone (it may write files) and hand its result to every rank."""
    w = w or world()
    return share(on_main(fn, w), w)
