"""What the compression bought: the student beside the teacher(s) it learned from, in parameters
and CPU latency per sample, timed in the same process, in interleaved rounds, so that whatever
else loads the machine slows both alike."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

def count_params(module: nn.Module) -> int:
    """Parameters of ``module``; of an ensemble teacher, every member's."""
    return sum(p.numel() for p in module.parameters())


def latency_ms(fns: dict[str, Callable], example: torch.Tensor, rounds: int = 7, round_s: float = 0.05) -> dict:
    """Median milliseconds per sample of each function on ``example``, timed in ``rounds``
    interleaved rounds (a round times every function once), after a warm-up call."""
    with torch.inference_mode():
        first = {}
        for name, fn in fns.items():
            fn(example)  # warm-up: allocation, onnxruntime's graph optimisation
            t0 = time.perf_counter()
            fn(example)
            first[name] = time.perf_counter() - t0
        calls = max(1, min(1000, int(round_s / max(max(first.values()), 1e-6))))  # the slowest sets the pace
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(example)
                times[name].append((time.perf_counter() - t0) / calls)
    return {name: 1000 * statistics.median(t) / len(example) for name, t in times.items()}


@dataclass
class Compression:
    """The student beside its teacher: parameters and CPU milliseconds per sample at batch size 1."""

    student: str
    teacher: str | None
    student_params: int
    teacher_params: int | None
    student_ms: float
    teacher_ms: float | None
    threads: int = field(default_factory=torch.get_num_threads)

    def line(self) -> str:
        if self.teacher is None:
            return (f"compression: student {self.student} {self.student_params:,} parameters, "
                    f"{self.student_ms:.3f} ms per sample on CPU; no teacher recorded")
        return (f"compression: student {self.student} {self.student_params:,} parameters vs teacher {self.teacher} "
                f"{self.teacher_params:,} ({self.teacher_params / self.student_params:.1f}x fewer); CPU latency per "
                f"sample {self.student_ms:.3f} ms vs {self.teacher_ms:.3f} ms "
                f"({speed(self.teacher_ms, self.student_ms)}), "
                f"batch 1, {self.threads} thread{'s' * (self.threads != 1)}")


def speed(teacher_ms: float, student_ms: float) -> str:
    """"3.2x faster", or "1.9x slower" when the student measured slower (a tiny model on a busy CPU)."""
    ratio = teacher_ms / student_ms
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def compression(student: nn.Module, student_name: str, teacher: nn.Module | None, teacher_name: str | None,
                in_shape) -> Compression:
    """Parameters and latency of ``student`` and ``teacher``, measured side by side on CPU."""
    student = student.cpu().eval()
    fns = {"student": student}
    if teacher is not None:
        fns["teacher"] = teacher.cpu().eval()
    ms = latency_ms(fns, torch.randn(1, *in_shape))  # latency does not depend on the values
    return Compression(student_name, teacher_name, count_params(student),
                       None if teacher is None else count_params(teacher), ms["student"], ms.get("teacher"))

