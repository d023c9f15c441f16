"""``--executor ray``: every cell one Ray task, on a cluster (``--address``) or a Ray started here.

Ray (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI Applications",
OSDI) schedules the tasks; this module only says what each needs and moves the values:

- resources: each task asks ``resources.num_cpus`` / ``num_gpus`` (config or ``--num-cpus`` /
  ``--num-gpus``), so Ray runs as many cells at once as the cluster holds and packs GPU
  cells onto GPUs. A cell asking more than the whole cluster has is refused up front
  (Ray would keep it waiting forever).
- no shared disk (``ckptkd.study.shipping``): a teacher checkpoint is put in the object store
  once and handed to its students as an object ref, which Ray resolves before the task
  runs, so a student waits on its teachers without any polling; a file dataset is put once
  and fetched once per node; the task returns its run folder's files and the driver writes
  them.
- faults: a task whose worker process or node dies is retried by Ray (``max_retries``);
  a task that raises (a bad config, a NaN guard) is not (``retry_exceptions=False``) and
  fails the study with its own one-line message. Cells finished before are already
  written, so the same command resumes.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

import torch

from ...errors import CkptkdError
from ..shipping import cell_spec, checkpoint_files, materialise_data, run_shipped, shipped_data
from .base import Executor, register_executor

MAX_RETRIES = 3  # per cell, for lost workers and nodes only
CONNECT_TIMEOUT_S = 3.0
INSTALL = "pip install 'ckptkd[ray]'"


def _token_auth_for_a_local_head() -> None:
    """Ask, before Ray is imported, for the token authentication that Ray 2.59+ turns on by
    default for a local ``ray.init()`` (it makes and keeps a token in ~/.ray/auth_token), so
    Ray does not warn at every start that it chose it: Ray's documented switch is the
    environment variable ``RAY_AUTH_MODE`` set before the cluster starts
    (https://docs.ray.io/en/latest/ray-security/token-auth.html). Ray reads it when it is
    imported, so a process that imported Ray already keeps Ray's default and its notice; a
    user's own ``RAY_AUTH_MODE`` (``disabled`` too) is left as it is."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _cell_on_worker(spec: dict, data_box: list | None, *teachers: dict) -> dict:
    """The task body, on a worker: ``teachers`` arrive resolved (Ray waited for them);
    ``data_box`` holds an object ref to a file dataset, fetched only if this worker lacks it."""
    import ray

    from ...config import DataConfig, from_dict

    if data_box is not None:
        materialise_data(from_dict(DataConfig, spec["cfg"]["data"], "data"), lambda: ray.get(data_box[0]))
    return run_shipped(spec, list(teachers))


@register_executor("ray")
class RayExecutor(Executor):
    def __init__(self, jobs: int = 1, address: str | None = None):
        if jobs != 1:
            raise CkptkdError(f"--jobs {jobs} does not apply to --executor ray: Ray runs as many cells at once as "
                              "the cluster has CPUs for (resources.num_cpus per cell); leave --jobs out")
        if address is None:
            _token_auth_for_a_local_head()
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CkptkdError(f"--executor ray needs Ray, which is not installed; install it with {INSTALL}") \
                from None
        super().__init__(1, address)
        self._owned = False  # whether start() started (and close() stops) a Ray of its own
        self._cfg = None
        self._task = None
        self._checkpoints: dict[str, object] = {}  # checkpoint path -> object ref of its bytes
        self._data: dict[str, list | None] = {}

    # ------------------------------------------------------------ connecting

    def start(self, cfg) -> None:
        import ray

        res = cfg.resources
        if not res.num_cpus > 0 or res.num_gpus < 0:
            raise CkptkdError(f"resources.num_cpus must be > 0 and resources.num_gpus >= 0 per cell, got "
                              f"{res.num_cpus} and {res.num_gpus}")
        if not ray.is_initialized():  # else: the caller's own ray.init (a test, a notebook), left as it is
            self._connect(ray)
        try:
            have = ray.cluster_resources()
            for what, need in (("CPU", res.num_cpus), ("GPU", res.num_gpus)):
                if need > have.get(what, 0):
                    flag = "--num-gpus 0 (or resources.num_gpus: 0)" if what == "GPU" else \
                        f"--num-cpus {have.get('CPU', 0):g} or fewer"
                    raise CkptkdError(f"each cell asks for {need:g} {what}, and the Ray cluster has "
                                      f"{have.get(what, 0):g} in all; give it to the cluster, or ask {flag}")
        except BaseException:
            self.close()
            raise
        self._cfg = cfg
        self._task = ray.remote(_cell_on_worker)

    def _connect(self, ray) -> None:
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            ray.init(address="local", **quiet)  # a new Ray on this machine's CPUs (and GPUs)
        else:
            _probe(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise CkptkdError(f"cannot join the Ray cluster at --address {self.address!r} "
                                  f"({_first_line(e)}); check the address `ray start --head` printed") from None
        self._owned = True

    def describe(self) -> dict:
        import ray

        have = ray.cluster_resources()
        return {"executor": self.name, "address": self.address or "a Ray started on this machine",
                "ray": ray.__version__, "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
                "cluster": {k: have[k] for k in ("CPU", "GPU", "memory") if k in have},
                "per_cell": {"num_cpus": self._cfg.resources.num_cpus, "num_gpus": self._cfg.resources.num_gpus},
                "max_retries": MAX_RETRIES}

    def cell_device(self, device: str) -> str:
        # Ray points CUDA_VISIBLE_DEVICES at the GPUs it gives a task: "cuda" is the cell's own
        return "cuda" if self._cfg.resources.num_gpus > 0 else "cpu"

    def close(self) -> None:
        import ray

        self._checkpoints.clear()
        self._data.clear()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    # ------------------------------------------------------------ running

    def run(self, todo, cfg, root, device, tracker, run_in_process) -> None:
        import ray

        if not todo:
            return
        cell_device, threads = self.cell_device(device), torch.get_num_threads()
        options = {"num_cpus": cfg.resources.num_cpus, "num_gpus": cfg.resources.num_gpus,
                   "max_retries": MAX_RETRIES, "retry_exceptions": False}
        tasks = {}
        for cell in todo:
            ref = self._task.options(name=f"ckptkd {cell.id}", **options).remote(
                cell_spec(cell, cfg, cell_device, threads), self._data_box(cfg),
                *(self._checkpoint(t) for t in cell.teachers))
            tasks[ref] = cell
            tracker.started(cell)
        pending = list(tasks)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)  # blocks until a cell is in
                for ref in ready:
                    try:
                        shipped = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - every way a task fails becomes the cell's one line
                        tracker.fail(tasks[ref])
                        raise _cell_error(tasks[ref].id, e) from None
                    tracker.done(tasks[ref], shipped)
        finally:
            for ref in pending:  # a failed cell, or Ctrl-C: the rest are not wanted now
                ray.cancel(ref)

    def _checkpoint(self, path: str):
        import ray

        if path not in self._checkpoints:  # once per checkpoint: all its students share the object
            self._checkpoints[path] = ray.put(checkpoint_files(path))
        return self._checkpoints[path]

    def _data_box(self, cfg) -> list | None:
        import ray

        key = cfg.data.spec
        if key not in self._data:
            shipped = shipped_data(cfg.data)
            # in a list, so that Ray does not resolve it for every task: a worker fetches it once
            self._data[key] = None if shipped is None else [ray.put(shipped)]
        return self._data[key]


def _probe(address: str) -> None:
    """Fail in a few seconds, in one line, when nothing listens at ``address`` (ray.init would retry for long)."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise CkptkdError(f"--address {address!r} is not HOST:PORT; give the address `ray start --head` printed "
                          "(e.g. 10.0.0.1:6379), ray://HOST:10001, or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise CkptkdError(f"no Ray cluster answers at --address {address!r} ({e.strerror or type(e).__name__}, "
                          f"{CONNECT_TIMEOUT_S:g} s timeout); start one with `ray start --head` and pass the address "
                          "it prints, or leave --address out to start Ray on this machine") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _cell_error(cell_id: str, e: Exception) -> CkptkdError:
    from ray.exceptions import RayTaskError, TaskCancelledError

    if isinstance(e, RayTaskError):  # the cell itself raised: not retried, its own line
        cause = e.cause
        what = str(cause) if isinstance(cause, CkptkdError) else f"{type(cause).__name__}: {_first_line(cause)}"
        return CkptkdError(f"cell {cell_id} failed: {what}")
    if isinstance(e, TaskCancelledError):
        return CkptkdError(f"cell {cell_id} was cancelled on the Ray cluster; run the same command to continue")
    return CkptkdError(f"cell {cell_id} lost its Ray worker {MAX_RETRIES + 1} times ({type(e).__name__}: "
                       f"{_first_line(e)}); the finished cells are kept: check the nodes (ray status), then run "
                       "the same command to continue")
