"""Shipping the student: ``ckptkd export`` to ONNX or TorchScript, and what the compression bought.

The exported file is checked before it is written: the runtime that will run it
(onnxruntime, or TorchScript loaded back) must give the PyTorch student's logits on a batch
of test inputs to within ``TOLERANCE``; otherwise nothing is written. ONNX files come from
torch's TorchScript-based exporter (``dynamo=False``), which needs neither ``onnxscript`` nor
a network; both formats trace the model, so a model whose forward branches on its input
values is caught by the check rather than exported wrong.

The compression report puts the student beside the teacher(s) it learned from: parameters,
size on disk and CPU latency per sample, timed in the same process, in interleaved rounds,
so that whatever else loads the machine slows both alike.
"""
from __future__ import annotations

import io
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import DataConfig, from_dict
from .data import Dataset, load_dataset
from .errors import CkptkdError, closest
from .io import atomic_write
from .teacher import Teacher
from .trajectory import Checkpoint, Run, load_model, open_checkpoint

TOLERANCE = 1e-4  # max |logit difference| between the exported file and the PyTorch student
CHECK_SAMPLES = 256
ONNX_OPSET = 17


# ---------------------------------------------------------------- formats


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str  # what runs the exported file, in the check and in deployment
    write: Callable[[nn.Module, torch.Tensor], bytes]  # (model in eval mode, example batch) -> the file's bytes
    load: Callable[[bytes], Callable[[torch.Tensor], torch.Tensor]]  # the file's bytes -> a batch -> logits


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CkptkdError(f"ONNX export needs the packages onnx and onnxruntime ({module} is missing); "
                          "pip install 'ckptkd[export]'") from None


def _onnx_write(model: nn.Module, example: torch.Tensor) -> bytes:
    _need("onnx")
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation on every call
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=ONNX_OPSET, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def _onnx_load(blob: bytes):
    ort = _need("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch gets, for a fair timing
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _torchscript_write(model: nn.Module, example: torch.Tensor) -> bytes:
    with warnings.catch_warnings():  # torch.jit warns about its own future
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)  # our own check below compares more inputs
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _torchscript_load(blob: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(blob), map_location="cpu").eval()
    return module


register_format(Format("onnx", "onnxruntime", _onnx_write, _onnx_load))
register_format(Format("torchscript", "TorchScript", _torchscript_write, _torchscript_load))


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise CkptkdError(f"unknown export format {name!r}{closest(name, FORMATS)}; use one of {', '.join(FORMATS)}")
    return FORMATS[name]


# ---------------------------------------------------------------- compression


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
                f"sample {self.student_ms:.3f} ms vs {self.teacher_ms:.3f} ms ({speed(self.teacher_ms, self.student_ms)}), "
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


# ---------------------------------------------------------------- the student and its teachers


def open_student(path: str | Path, model: str | None = None) -> tuple[Run, Checkpoint]:
    """The run and checkpoint of ``path``, which must be a checkpoint of a ckptkd run: its
    manifest says what the network is, its config what data it saw and whom it learned from."""
    path = Path(path)
    if not path.exists():
        raise CkptkdError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CkptkdError(f"{str(path)!r} is a folder; give a student's checkpoint file "
                          "(e.g. RUN/checkpoints/epoch_0030.safetensors)")
    run_dir = path.parent.parent
    if path.suffix != ".safetensors" or not path.with_suffix(".json").exists() \
            or not (run_dir / "manifest.json").exists():
        raise CkptkdError(f"{str(path)!r} is not a checkpoint of a ckptkd run (RUN/checkpoints/epoch_N.safetensors "
                          "with its sidecar); export takes a student trained by ckptkd distill or ckptkd run")
    return Run(run_dir), open_checkpoint(path, model)


def recorded_teachers(run: Run, teacher_model: str | None = None) -> tuple[list[Checkpoint], str | None]:
    """(checkpoints, note): the teachers ``run`` learned from, as ``ckptkd distill`` (manifest),
    a study cell or ``ckptkd run`` (config) recorded them; ``note`` says why none were found."""
    config = run.config or {}
    models = None  # per teacher, when recorded
    if run.manifest.get("teachers"):
        paths = [t["path"] for t in run.manifest["teachers"]]
        models = [teacher_model or t.get("model") for t in run.manifest["teachers"]]
    elif isinstance(config.get("cell"), dict):  # a study cell
        paths = list(config["cell"].get("teachers") or [])
    elif "stage" in config:  # a student of ckptkd run: teachers by epoch, in OUT/teacher
        epochs = config.get("teachers") or []
        teacher_run = run.path.parent.parent / "teacher"
        if not epochs:
            return [], "trained without a teacher"
        if not (teacher_run / "manifest.json").exists():
            return [], f"its teacher run {str(teacher_run)!r} is gone"
        found = {c.epoch: c for c in Run(teacher_run).checkpoints()}
        if any(e not in found for e in epochs):
            return [], f"teacher epochs {epochs} are not all in {str(teacher_run)!r}"
        return [found[e] for e in epochs], None
    else:
        paths = list(config.get("teachers") or [])  # ckptkd distill before teachers were in the manifest
        teacher_model = teacher_model or config.get("teacher_model")
    if not paths:
        return [], "no teacher recorded"
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        return [], f"teacher checkpoint {missing[0]!r} is not there any more"
    return [open_checkpoint(p, m) for p, m in zip(paths, models or [teacher_model] * len(paths))], None


def _check_data(run: Run, data: DataConfig | str | None) -> Dataset:
    if data is None:
        section = (run.config or {}).get("data")
        if not section:
            raise CkptkdError(f"run {str(run.path)!r} records no data to check the export on; give --data")
        data = from_dict(DataConfig, section, "data")
    dataset = load_dataset(data)
    want = tuple(run.manifest["in_shape"])
    if dataset.in_shape != want:
        raise CkptkdError(f"data {dataset.name!r} has inputs of shape {dataset.in_shape} but the student takes "
                          f"{want}; give the data it was trained with (--data)")
    return dataset


# ---------------------------------------------------------------- export


@dataclass
class Report:
    out: Path
    format: Format
    data: str
    samples: int
    max_diff: float
    rows: list[tuple[str, int, int, float]]  # (what, parameters, bytes on disk, ms per sample)
    note: str | None  # why there is no teacher row


def export(path: str | Path, fmt: str, out: str | Path, *, model: str | None = None, data=None,
           teachers: list[str] | None = None, teacher_model: str | None = None, overwrite: bool = False) -> Report:
    """Write the student checkpoint ``path`` as ``fmt`` into ``out``, checked; measure what it bought."""
    format_ = get_format(fmt)
    out = Path(out)
    if out.is_dir():
        raise CkptkdError(f"--out {str(out)!r} is a folder; give the file to write")
    if out.exists() and not overwrite:
        raise CkptkdError(f"{str(out)!r} already exists; pass --overwrite to replace it, or choose another --out")
    if not out.parent.is_dir():  # found now, not after the export's work
        raise CkptkdError(f"cannot write {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    run, ckpt = open_student(path, model)
    student = load_model(ckpt, run.manifest["num_classes"], tuple(run.manifest["in_shape"]))
    if teachers:
        t_ckpts, note = [open_checkpoint(t, teacher_model) for t in teachers], None
    else:
        t_ckpts, note = recorded_teachers(run, teacher_model)
    teacher = Teacher.from_checkpoints(t_ckpts, run.manifest["num_classes"], tuple(run.manifest["in_shape"])) \
        if t_ckpts else None
    dataset = _check_data(run, data)
    x = dataset.x_test[:CHECK_SAMPLES].contiguous()

    with torch.no_grad():
        blob = format_.write(student, x[:2])
        runner = format_.load(blob)
        diff = (runner(x) - student(x)).abs().max().item()
    if not diff <= TOLERANCE:  # (also catches NaN)
        raise CkptkdError(f"the {format_.name} export disagrees with the PyTorch student by up to {diff:.3g} "
                          f"(tolerance {TOLERANCE:g}) on {len(x)} test inputs, so it was not written; a forward "
                          "that branches on input values cannot be traced")
    atomic_write(out, blob)

    fns = {"student (PyTorch)": student, f"student ({format_.runtime})": runner}
    if teacher is not None:
        fns["teacher (PyTorch)"] = teacher
    ms = latency_ms(fns, x[:1])
    s_params = count_params(student)
    rows = [("student (PyTorch)", s_params, ckpt.path.stat().st_size, ms["student (PyTorch)"]),
            (f"student ({format_.runtime})", s_params, out.stat().st_size, ms[f"student ({format_.runtime})"])]
    if teacher is not None:
        label = "teacher " + ("epoch " if len(t_ckpts) == 1 else "epochs ") + "+".join(str(c.epoch) for c in t_ckpts)
        rows.append((label, count_params(teacher), sum(c.path.stat().st_size for c in t_ckpts),
                     ms["teacher (PyTorch)"]))
    return Report(out, format_, dataset.name, len(x), diff, rows, note)


def format_report(r: Report, source: str) -> str:
    lines = [f"wrote {r.out} ({r.format.name}) from {source}",
             f"check: {r.format.runtime} agrees with PyTorch on {r.samples} test inputs of {r.data}: "
             f"max |logit difference| {r.max_diff:.2e} (tolerance {TOLERANCE:g})"]
    head = f"{'':<22} {'parameters':>12} {'on disk':>10} {'CPU ms/sample':>14}"
    lines += [head, "-" * len(head)]
    for what, params, size, ms in r.rows:
        lines.append(f"{what:<22} {params:>12,} {_size(size):>10} {ms:>14.4f}")
    if len(r.rows) == 3:
        (_, s_params, s_size, s_ms), (_, _, _, x_ms), (_, t_params, t_size, t_ms) = r.rows
        lines.append(f"compression: {t_params / s_params:.1f}x fewer parameters, {t_size / s_size:.1f}x smaller "
                     f"on disk, {speed(t_ms, s_ms)} in PyTorch ({speed(t_ms, x_ms)} as exported)")
    else:
        lines.append(f"compression: not measured ({r.note}; give --teacher CKPT to compare)")
    lines.append(f"latency: batch size 1, {torch.get_num_threads()} threads, median of interleaved rounds")
    return "\n".join(lines)


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"
