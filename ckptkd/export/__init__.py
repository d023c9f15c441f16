"""Shipping the student: ``ckptkd export`` to ONNX, pt2 (torch.export) or legacy TorchScript, and
what the compression bought.

The exported file is checked before it is written: the runtime that will run it (onnxruntime,
the ``torch.export`` program loaded back, or TorchScript loaded back) must give the PyTorch
student's logits to within ``TOLERANCE`` on a batch of test inputs, at several batch sizes
(the batch dimension is dynamic); otherwise nothing is written. The formats are in
``ckptkd/export/formats``, one file each. A model that a format cannot capture (a forward that
branches on its input) is refused in one line that names the format that would work, which is
found by trying the others. The file appears complete or not at all (``publish``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig, from_dict
from ..data import Dataset, load_dataset
from ..errors import CkptkdError, warn
from ..teacher import Teacher
from ..trajectory import Checkpoint, Run, load_model, open_checkpoint
from .compression import Compression, compression, count_params, latency_ms, speed  # noqa: F401  (the API)
from .formats import FORMATS, CannotExport, Format, get_format, register_format  # noqa: F401
from .publish import publish

TOLERANCE = 1e-4  # max |logit difference| between the exported file and the PyTorch student
CHECK_SAMPLES = 256
EXAMPLE_BATCH = 2  # torch.export specialises batch sizes 0 and 1, so the example that keeps it dynamic has 2


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


# ---------------------------------------------------------------- export


def check_batches(x: torch.Tensor) -> list[torch.Tensor]:
    """The check inputs in batches of three sizes (all, 7 and 1), through the one exported file:
    its batch dimension must really be dynamic, and batch size 1 is what latency is timed at."""
    return [b for b in (x, x[1:8], x[:1]) if len(b)]


def max_difference(runner, student, x: torch.Tensor) -> float:
    """Largest |logit difference| between ``runner`` and ``student`` over ``check_batches(x)``
    (NaN if any output is NaN or of the wrong shape)."""
    worst = 0.0
    with torch.no_grad():
        for batch in check_batches(x):
            got, want = runner(batch), student(batch)
            if got.shape != want.shape:
                return float("nan")
            diff = (got - want).abs().max().item()
            if not diff <= worst:  # (keeps a NaN)
                worst = diff
    return worst


def write_checked(format_: Format, student, x: torch.Tensor):
    """(the file's bytes, its runner, the max difference): ``CannotExport`` or ``CkptkdError``
    when the format cannot capture the student, or captures it wrong."""
    with torch.no_grad():
        blob = format_.write(student, x[:EXAMPLE_BATCH])
    runner = format_.load(blob)
    diff = max_difference(runner, student, x)
    if not diff <= TOLERANCE:  # (also catches NaN)
        raise CkptkdError(f"the {format_.name} export disagrees with the PyTorch student by up to {diff:.3g} "
                          f"(tolerance {TOLERANCE:g}) on {len(x)} test inputs, so it was not written")
    return blob, runner, diff


def _what_works(failed: Format, student, x: torch.Tensor) -> str:
    """The first other format that exports ``student`` and passes the check, said as a fix."""
    for other in FORMATS.values():
        if other is failed:
            continue
        try:
            write_checked(other, student, x)
        except (CannotExport, CkptkdError):
            continue
        legacy = " (legacy, but it keeps the branch)" if other.legacy else ""
        return f"--format {other.name} would work{legacy}"
    return "no format ckptkd writes captures it; write the branch with torch.cond, which torch.export keeps"


@dataclass
class Report:
    out: Path
    format: Format
    data: str
    samples: int
    batches: list[int]  # the batch sizes of the check
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

    if format_.legacy:
        warn(format_.legacy)
    try:
        blob, runner, diff = write_checked(format_, student, x)
    except CannotExport as e:
        name = ckpt.model or run.manifest.get("model") or "the student"
        raise CkptkdError(f"model {name!r} cannot be exported as {format_.name}: {e}; "
                          f"{_what_works(format_, student, x)}") from None
    publish(out, blob)

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
    return Report(out, format_, dataset.name, len(x), [len(b) for b in check_batches(x)], diff, rows, note)


def format_report(r: Report, source: str) -> str:
    sizes = ", ".join(map(str, r.batches[:-1])) + f" and {r.batches[-1]}" if len(r.batches) > 1 else str(r.batches[0])
    lines = [f"wrote {r.out} ({r.format.name}) from {source}",
             f"check: {r.format.runtime} agrees with PyTorch on {r.samples} test inputs of {r.data} "
             f"(batch sizes {sizes}): max |logit difference| {r.max_diff:.2e} (tolerance {TOLERANCE:g})"]
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
