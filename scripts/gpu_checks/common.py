"""What every check shares: the sizes of a run (Profile), the check names, synthetic
CIFAR-format images and small tensor helpers."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ckptkd.train import _autocast

REPO = Path(__file__).resolve().parents[2]
FORMAT = "ckptkd-gpu-check"
BATCH = 128

CHECKS = ("cpu_vs_cuda", "train", "ensemble", "cache", "compile", "torchrun", "throughput", "paper")
GROUP = {"cpu_vs_cuda": 1, "train": 2, "ensemble": 2, "cache": 2, "compile": 2, "torchrun": 2, "throughput": 3,
         "paper": 4}


@dataclass(frozen=True)
class Profile:
    """Sizes of every check. ``full``: one modern GPU, under 8 minutes; ``tiny``: a CPU dry run."""

    name: str
    # checks 1 and 2: a small 10-class CIFAR-format job; the teacher is trained on CPU
    n_train: int
    n_test: int
    teacher: str
    teacher_epochs: int  # one checkpoint per epoch: the last 4 are the ensemble
    student: str
    student_epochs: int
    train_epochs: int  # ckptkd train on the device
    # compile and throughput: a bigger 10-class set
    bench_n_train: int
    bench_n_test: int
    compile_model: str
    compile_epochs: int
    bench_teacher: str
    bench_student: str
    bench_ks: tuple[int, ...]
    bench_rounds: int
    bench_epochs: int
    forward_batches: tuple[int, ...]  # teacher-forward timing: the training batch, the cache build's batch
    # check 4: the paper's WRN pair on a 100-class set
    paper_n_train: int
    paper_n_test: int
    paper_teacher: str
    paper_student: str
    paper_epochs: int
    paper_student_epochs: int
    paper_probe: int
    paper_min_s: float  # start check 4 only with this much time left


PROFILES = {
    "full": Profile("full", n_train=2048, n_test=1000, teacher="resnet8", teacher_epochs=4, student="wrn_16_1",
                    student_epochs=2, train_epochs=2, bench_n_train=10000, bench_n_test=1000, compile_model="resnet8",
                    compile_epochs=3, bench_teacher="resnet56", bench_student="resnet20", bench_ks=(2, 4, 8),
                    bench_rounds=3, bench_epochs=1, forward_batches=(128, 1024), paper_n_train=10000,
                    paper_n_test=2000, paper_teacher="wrn_40_2", paper_student="wrn_40_1", paper_epochs=4,
                    paper_student_epochs=2, paper_probe=2000, paper_min_s=90),
    "tiny": Profile("tiny", n_train=256, n_test=128, teacher="mlp_s", teacher_epochs=4, student="mlp_xs",
                    student_epochs=2, train_epochs=1, bench_n_train=256, bench_n_test=64, compile_model="mlp_xs",
                    compile_epochs=1, bench_teacher="mlp_s", bench_student="mlp_xs", bench_ks=(2,), bench_rounds=1,
                    bench_epochs=1, forward_batches=(64,), paper_n_train=400, paper_n_test=200,
                    paper_teacher="mlp_s", paper_student="mlp_xs", paper_epochs=4, paper_student_epochs=1,
                    paper_probe=100, paper_min_s=0),
}


# ---------------------------------------------------------------- synthetic data


def synthetic_images(n_train: int, n_test: int, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """CIFAR-format arrays, (N, 3, 32, 32) uint8, with a learnable signal: each class is a
    smooth random colour pattern (4x4 cells, bilinear to 32x32, so shifts and flips keep it
    recognisable) plus pixel noise. Every class appears in both splits."""
    rng = np.random.default_rng(seed)
    cells = torch.from_numpy(rng.normal(size=(num_classes, 3, 4, 4)).astype(np.float32))
    patterns = F.interpolate(cells, size=(32, 32), mode="bilinear", align_corners=False).numpy()

    def split(n):
        y = rng.permutation(np.arange(n) % num_classes)
        x = 128 + 40 * patterns[y] + 48 * rng.normal(size=(n, 3, 32, 32))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64)

    x, y = split(n_train)
    x_test, y_test = split(n_test)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


# ---------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def strict_fp32():
    """True float32 on CUDA: cuDNN convolutions use TF32 by default, which is not what a
    1e-3 comparison of two implementations should measure."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def deterministic():
    """torch.use_deterministic_algorithms (warn-only: an op without a deterministic kernel is
    recorded, not fatal) and no cuDNN autotuning; yields the list of warnings caught."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


@torch.no_grad()
def logits_of(model, x: torch.Tensor, device: torch.device, autocast: bool = False, batch: int = 500) -> torch.Tensor:
    """float32 logits on the CPU, computed on ``device`` the way ``evaluate`` does (and, with
    ``autocast``, under the autocast ``fit`` trains with)."""
    model.eval().to(device)
    out = []
    for i in range(0, len(x), batch):
        with _autocast(device) if autocast else contextlib.nullcontext():
            out.append(model(x[i:i + batch].to(device)).float().cpu())
    return torch.cat(out)


def compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
    return {"argmax_agreement": (reference.argmax(1) == other.argmax(1)).double().mean().item(),
            "max_abs_diff": (reference - other).abs().max().item()}


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> tuple[bool, float]:
    """(bit-identical, max |difference|) of two models' state_dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    identical = all(torch.equal(sa[k], sb[k]) for k in sa)
    diff = max(((sa[k].double() - sb[k].double()).abs().max().item() if sa[k].numel() else 0.0) for k in sa)
    return identical, diff


def pct(v) -> str:
    return f"{100 * v:.2f}%"
