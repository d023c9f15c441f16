"""The executor interface (``Executor``), the progress ``Tracker`` and the registry of engines.

Each engine's module (``local.py``, ``ray.py``) imports this one and registers itself; the
package's ``__init__`` imports the engines, so no import goes round a circle."""
from __future__ import annotations

from typing import Callable

from ...config import StudyConfig

EXECUTORS: dict[str, type["Executor"]] = {}


def register_executor(name: str):
    def add(cls):
        if name in EXECUTORS:
            raise ValueError(f"executor {name!r} registered twice")
        cls.name = name
        EXECUTORS[name] = cls
        return cls

    return add


class Executor:
    """Runs cells. Subclasses check their options in ``__init__`` (before anything is written),
    connect in ``start`` and run a batch of cells in ``run``."""

    name = ""

    def __init__(self, jobs: int = 1, address: str | None = None):
        self.jobs, self.address = jobs, address

    def start(self, cfg: StudyConfig) -> None:
        """Connect and check that ``cfg``'s cells can run here; raise ``CkptkdError`` if not.
        Called before the study folder is touched."""

    def describe(self) -> dict:
        """What ran the cells, for invocations.jsonl: the executor and the resources it had."""
        return {"executor": self.name}

    def cell_device(self, device: str) -> str:
        """The device a cell runs on, given the driver's device."""
        return device

    def run(self, todo: list, cfg: StudyConfig, root, device: str, tracker: "Tracker",
            run_in_process: Callable) -> None:
        """Run every cell of ``todo``, telling ``tracker`` as each starts and ends (in this
        process). ``run_in_process`` is the runner's ``run_cell``, for cells run right here."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``start`` took (a Ray this executor started, say)."""


class Tracker:
    """The runner's ears: the progress bar (done, in flight, failed) and the cells to count.

    ``done(cell, shipped)``: ``shipped`` is None when the cell wrote its own folder under the
    study folder, else what a worker returned, for the driver to write
    (``ckptkd.study.shipping``)."""

    def __init__(self, bar, on_done: Callable[[object, dict | None], None]):
        self.bar, self.on_done = bar, on_done
        self.in_flight = self.failed = 0

    def started(self, cell) -> None:
        self.in_flight += 1
        self._show(cell.id)

    def done(self, cell, shipped: dict | None = None) -> None:
        self.on_done(cell, shipped)
        self.in_flight -= 1
        if self.in_flight or self.failed:
            self._show(cell.id)
        self.bar.update()

    def fail(self, cell) -> None:
        self.in_flight -= 1
        self.failed += 1
        self._show(f"{cell.id} failed")

    def _show(self, last: str) -> None:
        if self.in_flight > 1 or self.failed:  # more than one at a time: say how many
            self.bar.set_postfix_str(f"in flight {self.in_flight} (running or queued), failed {self.failed}")
        else:
            self.bar.set_postfix_str(last)
