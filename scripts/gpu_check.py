"""A prepared GPU check: run every CUDA path of ckptkd once, in minutes, the day a GPU is lent.

    bash scripts/gpu_check.sh                         # on a CUDA machine: every check, under 8 minutes
    bash scripts/gpu_check.sh --only cache,compile    # rerun some checks
    python scripts/gpu_check.py --device cpu --force --profile tiny   # the whole list on CPU: a dry run
    python scripts/gpu_check.py --write-docs          # gpu_check.json -> the GPU table in docs/benchmarks.md

Checks (one line each, ``ok`` or ``FAIL`` with its figure; everything in gpu_check.json):

1. ``cpu_vs_cuda``  a small teacher trained briefly on CPU on synthetic CIFAR-format images,
   its last checkpoint evaluated on CPU and on CUDA: fp32 (TF32 off; FAIL below 99.9%
   argmax agreement), CUDA's defaults (TF32 convolutions, what ``ckptkd eval`` gets) and
   bf16 autocast (what training gets).
2. ``train``        ``ckptkd train`` on CUDA, and ``fit`` seen from inside: bf16 autocast and
                    channels_last batches, as its docstring promises.
   ``ensemble``     a 4-checkpoint teacher, vmap against the loop (fp32, within 1e-3), which
                    one ``ensemble="auto"`` takes, and a distillation with each and by the CLI.
   ``cache``        the teacher cache built on the device; under deterministic settings the
                    cached student is rebuilt bit for bit, and it is compared with the
                    student whose teacher runs in the loop (identical on CPU; on CUDA the loop's
                    teacher runs under bf16 autocast and the cache holds fp32 outputs, so the
                    targets are compared against a tolerance, TARGET_TOL below).
   ``compile``      ``compile: true`` for a few hundred steps, against the same run eager.
   ``torchrun``     ``torchrun --nproc_per_node 1 -m ckptkd train``; with two GPUs or more also
                    two processes, the only way SyncBatchNorm runs (``parallel.wrap`` converts
                    BatchNorm only when the world has more than one rank, and PyTorch's
                    SyncBatchNorm is plain BatchNorm in a world of one).
3. ``throughput``   resnet56 -> resnet20 KD samples/s with and without the cache against CE
                    (``benchmarks/bench_distill.py``'s duels), and snapshot ensembles of K = 2, 4,
                    8 by the loop against vmap (``benchmarks/bench_vmap.py``'s members and timer):
                    teacher forwards and whole KD epochs. Every ratio: both sides in this run,
                    alternating, median of per-round ratios.
4. ``paper``        if time remains: wrn_40_2 -> wrn_40_1 on a synthetic CIFAR-100-format set,
                    4 checkpoints, ``ckptkd analyze``, ``select`` and one distillation per
                    policy of ``ckptkd.select.POLICIES``. It stops at the time limit and keeps
                    what finished.

Without CUDA the script runs the CPU half of check 1, prints one ``no CUDA: ...`` line and
exits 0 (CI runs it that way). Every check is guarded: an exception is a FAIL with its first
line, and the next check runs. gpu_check.json is rewritten after every check, so a run killed
by the wrapper's ``timeout`` keeps what finished. Exit status: 0 when no check failed, 1 otherwise,
2 for bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
import warnings
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

# cuBLAS reads this when it creates its first handle: deterministic matmuls (check ``cache``) need it
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # check the ckptkd this script sits in
    sys.path.insert(0, str(REPO))

from ckptkd import (KD, CrossEntropy, DataConfig, KDConfig, Run, StageConfig, Teacher, distill, fit,  # noqa: E402
                    load_dataset, load_model, train)
from ckptkd.config import to_dict  # noqa: E402
from ckptkd.ensemble import use_vmap  # noqa: E402
from ckptkd.teacher_cache import TeacherCache  # noqa: E402
from ckptkd.train import _autocast, build_model, evaluate  # noqa: E402

FORMAT = "ckptkd-gpu-check"
AGREEMENT_MIN = 0.999  # fp32 argmax agreement CPU vs CUDA (the issue's bar)
ENSEMBLE_TOL = 1e-3  # fp32 vmap vs loop, max |logit difference|
# Cached targets (fp32 teacher, cache build) against the targets the loop computes (teacher
# under bf16 autocast): log-probabilities at T. bf16 keeps 8 bits of mantissa, so logits of
# magnitude 10-20 move by up to ~0.1-0.2 after a dozen layers, a few hundredths after /T and
# log_softmax. A cache serving the wrong rows (another view, another sample) is off by
# nats, not hundredths, on average.
TARGET_TOL = {"max": 0.5, "mean": 0.05}
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


class Interrupted(BaseException):
    """SIGTERM (the wrapper's ``timeout``) or the script's own deadline inside a check."""


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


# ---------------------------------------------------------------- the context shared by checks


class Context:
    """Device, sizes, work folder and lazily built shared things (data sets, the CPU teacher)."""

    def __init__(self, args, device: torch.device, profile: Profile, work: Path):
        self.args, self.device, self.p, self.work = args, device, profile, work
        self.deadline = time.monotonic() + args.time_limit
        self._memo: dict = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def memo(self, key, make):
        """``make()`` once; a failure is kept too, so the checks that share it fail alike, at once."""
        if key not in self._memo:
            try:
                self._memo[key] = make()
            except Exception as e:  # noqa: BLE001 - re-raised to every caller
                self._memo[key] = e
        if isinstance(self._memo[key], Exception):
            raise self._memo[key]
        return self._memo[key]

    def spec(self, name: str) -> str:
        """The dataset spec of synthetic set ``name``, written to the work folder on first use:
        small (checks 1, 2), bench (compile, check 3), c100 (check 4)."""
        p = self.p
        n_train, n_test, classes, seed = {"small": (p.n_train, p.n_test, 10, 0),
                                          "bench": (p.bench_n_train, p.bench_n_test, 10, 1),
                                          "c100": (p.paper_n_train, p.paper_n_test, 100, 2)}[name]

        def make():
            path = self.work / f"{name}.npz"
            np.savez(path, **synthetic_images(n_train, n_test, classes, seed))
            return f"npz:{path}"
        return self.memo(("spec", name), make)

    def data(self, name: str):
        return self.memo(("data", name), lambda: load_dataset(DataConfig(spec=self.spec(name))))

    def teacher_run(self) -> Run:
        """The small teacher of checks 1 and 2, trained on CPU, a checkpoint every epoch."""
        def make():
            data, p = self.data("small"), self.p
            stage = StageConfig(model=p.teacher, epochs=p.teacher_epochs, batch_size=BATCH, save_every=1)
            run = Run.create(self.work / "teacher", {"data": {"spec": self.spec("small")},
                                                     "train": to_dict(stage)},
                             model=p.teacher, num_classes=data.num_classes, in_shape=data.in_shape,
                             data_fingerprint=data.fingerprint)
            t0 = time.perf_counter()
            train(data, stage, seed=0, device="cpu", run=run, progress=False)
            self._memo["teacher_train_s"] = time.perf_counter() - t0
            return Run(run.path)
        return self.memo("teacher_run", make)

    def ensemble_ckpts(self):
        return self.teacher_run().checkpoints()[-4:]

    def env(self) -> dict:
        """Subprocess environment: this repository's ckptkd first."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path}

    def subprocess(self, cmd: list[str]) -> subprocess.CompletedProcess:
        limit = max(30.0, min(600.0, self.remaining() + 30))
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=limit, cwd=self.work)
        if proc.returncode != 0:
            lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
            # torchrun ends with its own summary: name the child's exception, and keep the tail
            errors = [line for line in lines if "Error" in line or "error:" in line]
            tail = "\n".join(lines[-25:])
            raise RuntimeError(f"{' '.join(cmd[1:4])} ... exited {proc.returncode}: {(errors or lines)[-1].strip()}\n{tail}")
        return proc


def cli(*argv: str) -> str:
    """``ckptkd ARGV`` in this process; its stdout, or RuntimeError with its error line."""
    from ckptkd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    if rc != 0:
        raise RuntimeError(f"ckptkd {argv[0]} exited {rc}: {(err.getvalue().strip() or 'no output').splitlines()[-1]}")
    return out.getvalue()


# ---------------------------------------------------------------- check 1


def cpu_half(ctx: Context, fig: dict) -> torch.Tensor:
    """Train the teacher on CPU and evaluate its last checkpoint there; the CPU logits."""
    data = ctx.data("small")
    run = ctx.teacher_run()
    ckpt = run.checkpoints()[-1]
    model = load_model(ckpt, data.num_classes, data.in_shape)
    cpu = logits_of(model, data.x_test, torch.device("cpu"))
    acc = (cpu.argmax(1) == data.y_test).double().mean().item()
    fig.update(model=ctx.p.teacher, n_train=len(data.x_train), n_test=len(data.x_test), classes=data.num_classes,
               checkpoints=len(run.checkpoints()), checkpoint_epoch=ckpt.epoch,
               teacher_train_s=round(ctx._memo.get("teacher_train_s", float("nan")), 2),
               cpu_test_acc=acc, cpu_logits_finite=bool(torch.isfinite(cpu).all()),
               # the logits here and ckptkd's own evaluate must agree on the accuracy
               cpu_acc_matches_evaluate=abs(acc - evaluate(model, data.x_test, data.y_test)["acc"]) < 1e-12)
    return cpu


def check_cpu_half_only(ctx: Context, fig: dict) -> tuple[bool, str]:
    cpu_half(ctx, fig)
    ok = fig["cpu_logits_finite"] and fig["cpu_acc_matches_evaluate"] and fig["checkpoints"] >= 4
    return ok, (f"CPU half only: {fig['model']} trained on CPU in {fig['teacher_train_s']} s, "
                f"test acc {pct(fig['cpu_test_acc'])} on {fig['n_test']} images")


def check_cpu_vs_cuda(ctx: Context, fig: dict) -> tuple[bool, str]:
    cpu = cpu_half(ctx, fig)
    data, dev = ctx.data("small"), ctx.device
    model = load_model(ctx.teacher_run().checkpoints()[-1], data.num_classes, data.in_shape)
    with strict_fp32():
        fig["fp32"] = compare(cpu, logits_of(model, data.x_test, dev))
    fig["cuda_defaults"] = compare(cpu, logits_of(model, data.x_test, dev))  # TF32 convolutions on CUDA
    fig["bf16"] = compare(cpu, logits_of(model, data.x_test, dev, autocast=True))
    fig["max_abs_logit"] = cpu.abs().max().item()
    fig["autocast"] = "bf16" if dev.type == "cuda" else "none (CPU)"
    ok = fig["fp32"]["argmax_agreement"] >= AGREEMENT_MIN and fig["cpu_logits_finite"]
    f, d, b = fig["fp32"], fig["cuda_defaults"], fig["bf16"]
    return ok, (f"fp32 argmax agreement {pct(f['argmax_agreement'])} (min {pct(AGREEMENT_MIN)}), max |dlogit| "
                f"{f['max_abs_diff']:.1e}; defaults {pct(d['argmax_agreement'])} / {d['max_abs_diff']:.1e}; "
                f"bf16 {pct(b['argmax_agreement'])} / {b['max_abs_diff']:.1e} (|logit| <= {fig['max_abs_logit']:.1f})")


# ---------------------------------------------------------------- check 2


def check_train(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev = ctx.p, ctx.device
    spec, data = ctx.spec("small"), ctx.data("small")
    out = ctx.work / "train_cli"
    ctx.subprocess([sys.executable, "-m", "ckptkd", "train", "--data", spec, "--model", p.teacher,
                    "--epochs", str(p.train_epochs), "--save-every", "1", "--batch-size", str(BATCH),
                    "--device", dev.type, "--out", str(out), "--quiet"])
    run = Run(out)
    last = run.metrics()[-1]
    fig["cli"] = {"checkpoints": len(run.checkpoints()), "complete": run.complete, "test_acc": last["test_acc"],
                  "train_loss": last["train_loss"], "samples_per_s": last["samples_per_s"]}
    # the same loop seen from inside: what the model receives, and in which dtype it computes
    seen = {"channels_last": set(), "dtype": set()}
    model = build_model(p.teacher, data, 0)

    def pre(module, inputs):
        if module.training:
            x = inputs[0]
            seen["channels_last"].add(x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                                      and not x.is_contiguous())

    def post(module, inputs, output):
        if module.training:
            seen["dtype"].add(str(output.dtype).replace("torch.", ""))

    hooks = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    try:
        fit(model, CrossEntropy(), data, StageConfig(model=p.teacher, epochs=1, batch_size=BATCH), seed=0,
            device=dev, progress=False)
    finally:
        for h in hooks:
            h.remove()
    want_cl = dev.type == "cuda" and data.x_train.dim() == 4
    want_dtype = "bfloat16" if dev.type == "cuda" else "float32"
    fig["inside"] = {"channels_last": sorted(seen["channels_last"]), "dtype": sorted(seen["dtype"]),
                     "expected_channels_last": want_cl, "expected_dtype": want_dtype}
    ok = (fig["cli"]["complete"] and fig["cli"]["checkpoints"] == p.train_epochs
          and math.isfinite(last["train_loss"]) and seen["channels_last"] == {want_cl} and seen["dtype"] == {want_dtype})
    return ok, (f"ckptkd train {p.teacher}: {last['samples_per_s']:.0f} samples/s, test acc {pct(last['test_acc'])}; "
                f"fit ran {'/'.join(sorted(seen['dtype']))}, channels_last {sorted(seen['channels_last'])} "
                f"(expected {want_dtype}, [{want_cl}])")


def ensemble_outputs(teacher: Teacher, x: torch.Tensor, device: torch.device, autocast: bool) -> torch.Tensor:
    """(K, N, C) member logits in batches, as ``fit`` feeds the teacher (channels_last on CUDA)."""
    out = []
    for i in range(0, len(x), BATCH):
        xb = x[i:i + BATCH].to(device)
        if device.type == "cuda" and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device) if autocast else contextlib.nullcontext():
            out.append(teacher.member_logits(xb).float().cpu())
    return torch.cat(out, dim=1)


def check_ensemble(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev, data = ctx.p, ctx.device, ctx.data("small")
    ckpts = ctx.ensemble_ckpts()
    teachers = {mode: Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, ensemble=mode).to(dev)
                for mode in ("loop", "vmap")}
    fig["members"] = len(ckpts)
    fig["auto_uses_vmap"] = use_vmap("auto", teachers["loop"].members, dev)
    x = data.x_train[:1024]
    with strict_fp32():
        fp32 = {m: ensemble_outputs(t, x, dev, autocast=False) for m, t in teachers.items()}
    fig["fp32_max_abs_diff"] = (fp32["loop"] - fp32["vmap"]).abs().max().item()
    bf16 = {m: ensemble_outputs(t, x, dev, autocast=True) for m, t in teachers.items()}
    fig["autocast_max_abs_diff"] = (bf16["loop"] - bf16["vmap"]).abs().max().item()
    fig["vmap_stacked"] = teachers["vmap"]._stacked is not None and teachers["loop"]._stacked is None
    stage = StageConfig(model=p.student, epochs=1, batch_size=BATCH)
    fig["student_acc"] = {}
    for mode, teacher in teachers.items():
        _, rec = distill(data, stage, teacher, KDConfig(), seed=1, device=dev, progress=False)
        fig["student_acc"][mode] = rec["test_acc"]
    out = ctx.work / "distill_cli"
    cli("distill", "--data", ctx.spec("small"), *[a for c in ckpts for a in ("--teacher", str(c.path))],
        "--model", p.student, "--epochs", "1", "--batch-size", str(BATCH), "--device", dev.type, "--out", str(out),
        "--quiet")
    fig["student_acc"]["cli_auto"] = Run(out).metrics()[-1]["test_acc"]
    ok = (fig["fp32_max_abs_diff"] <= ENSEMBLE_TOL and fig["auto_uses_vmap"] == (dev.type == "cuda")
          and fig["vmap_stacked"] and all(math.isfinite(a) for a in fig["student_acc"].values()))
    s = fig["student_acc"]
    return ok, (f"{len(ckpts)} checkpoints, vmap vs loop max |diff| fp32 {fig['fp32_max_abs_diff']:.1e} "
                f"(max {ENSEMBLE_TOL:g}), autocast {fig['autocast_max_abs_diff']:.1e}; auto uses vmap: "
                f"{fig['auto_uses_vmap']}; student acc loop {pct(s['loop'])}, vmap {pct(s['vmap'])}, "
                f"CLI {pct(s['cli_auto'])}")


class CompareTargets(KD):
    """KD from the cache that also runs the teacher on every batch, exactly where ``KD``
    without a cache would, and records how far the two targets are apart."""

    def __init__(self, teacher, cfg, cache):
        super().__init__(teacher, cfg, cache)
        self.max, self.sum, self.count, self.missing = 0.0, 0.0, 0, 0

    def __call__(self, model, x, y, idx, epoch):
        with torch.no_grad():
            fresh = self.teacher.log_probs(x, self.cfg.temperature).float()
            cached = self.cache.log_probs(idx, epoch, self.cfg.temperature)
            if cached is None:
                self.missing += 1
            else:
                diff = (cached.to(x.device) - fresh).abs()
                self.max = max(self.max, diff.max().item())
                self.sum += diff.sum().item()
                self.count += diff.numel()
        return super().__call__(model, x, y, idx, epoch)


def check_cache(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev, data = ctx.p, ctx.device, ctx.data("small")
    kd = KDConfig()
    teacher = Teacher.from_checkpoints(ctx.ensemble_ckpts(), data.num_classes, data.in_shape).to(dev)
    stage = StageConfig(model=p.student, epochs=p.student_epochs, batch_size=BATCH)
    folder = ctx.work / "cache"
    with deterministic() as caught:
        t0 = time.perf_counter()
        cache = TeacherCache.build(folder, teacher, data, kd.temperature, views=stage.epochs, device=dev)
        fig["build_s"] = round(time.perf_counter() - t0, 3)
        fig["views"] = cache.views
        recorder = CompareTargets(teacher, kd, cache)
        a = build_model(stage.model, data, 1)  # what distill(seed=1) starts from
        rec_a = fit(a, recorder, data, stage, seed=1, device=dev, progress=False)
        b, rec_b = distill(data, stage, teacher, kd, seed=1, device=dev, progress=False)
        # the public path again: reopens the entry (and spot-checks it) on the device
        c, rec_c = distill(data, stage, teacher, kd, seed=1, device=dev, progress=False, cache_dir=folder)
    fig["deterministic_warnings"] = sorted({first_line(w.message) for w in caught
                                            if "deterministic" in str(w.message).lower()})[:5]
    fig["targets"] = {"max_abs_diff": recorder.max, "mean_abs_diff": recorder.sum / max(recorder.count, 1),
                      "batches_missing_from_cache": recorder.missing}
    fig["rerun_identical"], _ = same_weights(a, c)
    fig["vs_no_cache_identical"], fig["vs_no_cache_max_weight_diff"] = same_weights(a, b)
    fig["test_acc"] = {"cache": rec_a["test_acc"], "no_cache": rec_b["test_acc"], "cache_rerun": rec_c["test_acc"]}
    t = fig["targets"]
    close = t["max_abs_diff"] <= TARGET_TOL["max"] and t["mean_abs_diff"] <= TARGET_TOL["mean"]
    rule = f"targets within max {TARGET_TOL['max']}, mean {TARGET_TOL['mean']} of the loop's"
    if dev.type == "cpu":  # both teachers compute in float32 here: the students must be identical
        close, rule = close and fig["vs_no_cache_identical"], rule + "; identical to the no-cache student"
    fig["rule"] = rule
    ok = fig["rerun_identical"] and close and t["batches_missing_from_cache"] == 0
    return ok, (f"built in {fig['build_s']:.1f} s; cached targets vs loop max {t['max_abs_diff']:.1e}, mean "
                f"{t['mean_abs_diff']:.1e}; rerun bit-identical {fig['rerun_identical']}; vs no-cache student: "
                f"identical {fig['vs_no_cache_identical']}, max |dw| {fig['vs_no_cache_max_weight_diff']:.1e}, "
                f"acc {pct(rec_a['test_acc'])} vs {pct(rec_b['test_acc'])} (rule: {rule})")


def check_compile(ctx: Context, fig: dict) -> tuple[bool, str]:
    import torch._dynamo

    p, dev, data = ctx.p, ctx.device, ctx.data("bench")
    stage = StageConfig(model=p.compile_model, epochs=p.compile_epochs, batch_size=BATCH)
    fig["steps"] = p.compile_epochs * math.ceil(len(data.x_train) / BATCH)
    fig["compile_disabled"] = bool(torch._dynamo.config.disable)  # TORCH_COMPILE_DISABLE=1: a dry run
    for name, compiled in (("eager", False), ("compiled", True)):
        model = build_model(stage.model, data, 0)
        t0 = time.perf_counter()
        rec = fit(model, CrossEntropy(), data, replace(stage, compile=compiled), seed=0, device=dev, progress=False)
        fig[name] = {"wall_s": round(time.perf_counter() - t0, 2), "last_epoch_samples_per_s": rec["samples_per_s"],
                     "train_loss": rec["train_loss"], "test_acc": rec["test_acc"]}
    e, c = fig["eager"], fig["compiled"]
    fig["speedup_last_epoch"] = c["last_epoch_samples_per_s"] / e["last_epoch_samples_per_s"]
    ok = math.isfinite(c["train_loss"])
    return ok, (f"{fig['steps']} steps of {p.compile_model}: compiled {c['last_epoch_samples_per_s']:.0f} vs eager "
                f"{e['last_epoch_samples_per_s']:.0f} samples/s (last epoch, x{fig['speedup_last_epoch']:.2f}), "
                f"wall {c['wall_s']:.0f} vs {e['wall_s']:.0f} s; test acc {pct(c['test_acc'])} vs {pct(e['test_acc'])}")


def check_torchrun(ctx: Context, fig: dict) -> tuple[bool, str]:
    p, dev = ctx.p, ctx.device
    procs = [1] + ([2] if dev.type == "cuda" and torch.cuda.device_count() >= 2 else [])
    fig["runs"] = {}
    for n in procs:
        out = ctx.work / f"torchrun{n}"
        t0 = time.perf_counter()
        ctx.subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                        "-m", "ckptkd", "train", "--data", ctx.spec("small"), "--model", p.teacher,
                        "--epochs", "1", "--batch-size", str(BATCH), "--device", dev.type, "--out", str(out), "--quiet"])
        run = Run(out)
        fig["runs"][n] = {"complete": run.complete, "test_acc": run.metrics()[-1]["test_acc"],
                          "wall_s": round(time.perf_counter() - t0, 1)}
    fig["syncbatchnorm_exercised"] = len(procs) > 1
    fig["syncbatchnorm_note"] = ("ran in 2 processes on 2 GPUs" if len(procs) > 1 else
                                 "not exercised: with one process parallel.world() is not distributed, so "
                                 "parallel.wrap neither converts BatchNorm nor wraps in DDP (and SyncBatchNorm "
                                 "is plain BatchNorm in a world of one); it needs 2 GPUs")
    ok = all(r["complete"] for r in fig["runs"].values())
    return ok, (", ".join(f"nproc {n}: test acc {pct(r['test_acc'])} in {r['wall_s']:.0f} s" for n, r in fig["runs"].items())
                + f"; SyncBatchNorm {'ran' if len(procs) > 1 else 'not exercised (one process)'}")


# ---------------------------------------------------------------- check 3


@contextlib.contextmanager
def on_device(bench_distill, device: torch.device):
    """benchmarks/bench_distill.py trains and builds on the CPU (its calls name no device):
    bind its ``fit``, ``train``, ``Teacher`` and ``TeacherCache`` to ``device`` for this check."""
    names = ("fit", "train", "Teacher", "TeacherCache")
    saved = {n: getattr(bench_distill, n) for n in names}
    bench_distill.fit = partial(fit, device=device)
    bench_distill.train = partial(train, device=device)
    bench_distill.Teacher = types.SimpleNamespace(
        from_checkpoints=lambda *a, **k: Teacher.from_checkpoints(*a, **k).to(device))
    bench_distill.TeacherCache = types.SimpleNamespace(build=partial(TeacherCache.build, device=device))
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(bench_distill, n, v)


def duel(a, b, rounds: int) -> dict:
    """Seconds of two zero-argument timed sides, alternating which goes first, after one
    untimed warm-up each; medians, and the median of the per-round ratios b / a."""
    a(), b()
    times = {"a": [], "b": []}
    for r in range(rounds):
        for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
            times[side].append({"a": a, "b": b}[side]())
    return {"a": statistics.median(times["a"]), "b": statistics.median(times["b"]),
            "ratio": statistics.median(tb / ta for ta, tb in zip(times["a"], times["b"]))}


def check_throughput(ctx: Context, fig: dict) -> tuple[bool, str]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_distill
    import bench_vmap

    p, dev, data = ctx.p, ctx.device, ctx.data("bench")
    n = len(data.x_train)
    fig.update(teacher=p.bench_teacher, student=p.bench_student, n_train=n, n_test=len(data.x_test), batch=BATCH,
               epochs_per_side=p.bench_epochs, rounds=p.bench_rounds, clock="wall")
    # 1. one teacher: CE, KD reading the cache, KD recomputing the teacher (bench_distill's duels)
    args = types.SimpleNamespace(student=p.bench_student, epochs=p.bench_epochs, batch_size=BATCH, rounds=p.bench_rounds)
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp, on_device(bench_distill, dev):
        ckpts = bench_distill.teacher_checkpoints(Path(tmp) / "teacher", data, p.bench_teacher, 1, 1)
        r = bench_distill.bench(data, ckpts, args, Path(tmp) / "cache")
    w = r["wall"]
    fig["kd"] = {"samples_per_s": {"ce": n / w["ce"], "kd_cache": n / w["cache"], "kd_recompute": n / w["recompute"]},
                 "kd_cache/ce": w["cache/ce"], "kd_recompute/kd_cache": w["recompute/cache"],
                 "cache_build_s": w["build"], "students_identical": r["identical"]}
    # 2. snapshot ensembles of K random-init members: teacher forwards and KD epochs, loop vs vmap
    stage = StageConfig(model=p.bench_student, epochs=p.bench_epochs, batch_size=BATCH)
    fig["ensembles"] = {}
    for k in p.bench_ks:
        if ctx.remaining() < 0:
            fig["ensembles"][k] = "skipped: time limit"
            continue
        members = [m.to(dev) for m in bench_vmap.members(p.bench_teacher, k, data.in_shape)]
        row = {}
        for batch in p.forward_batches:
            # the training batch as fit feeds the teacher (bf16, channels_last); bigger: the cache build's (fp32)
            training = batch == BATCH
            x = data.x_train[:batch].to(dev)
            if training and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            teachers = {mode: Teacher(members, ensemble=mode) for mode in ("loop", "vmap")}

            def forward(mode, x=x, teachers=teachers, training=training):
                def run():
                    with _autocast(dev) if training else contextlib.nullcontext():
                        teachers[mode].member_logits(x)
                    sync(dev)
                return lambda: bench_vmap.timed(lambda _: run(), x, 5)["wall"]

            d = duel(forward("loop"), forward("vmap"), max(3, p.bench_rounds))
            row[f"forward_b{batch}"] = {"loop_ms": 1e3 * d["a"], "vmap_ms": 1e3 * d["b"], "vmap/loop": d["ratio"],
                                        "autocast": training}
        teachers = {mode: Teacher(members, ensemble=mode) for mode in ("loop", "vmap")}
        kd = {mode: (lambda mode=mode: bench_distill.epoch_seconds(lambda: KD(teachers[mode], KDConfig()), data,
                                                                   stage)[0]["wall"]) for mode in teachers}
        with on_device(bench_distill, dev):
            d = duel(kd["loop"], kd["vmap"], p.bench_rounds)
        row["kd_recompute"] = {"loop_samples_per_s": n / d["a"], "vmap_samples_per_s": n / d["b"],
                               "vmap/loop_time": d["ratio"]}
        fig["ensembles"][k] = row
    kd_ = fig["kd"]
    ens = "; ".join(f"K={k} forward vmap/loop {v[f'forward_b{p.forward_batches[0]}']['vmap/loop']:.2f}, KD time "
                    f"vmap/loop {v['kd_recompute']['vmap/loop_time']:.2f}" for k, v in fig["ensembles"].items()
                    if isinstance(v, dict))
    s = kd_["samples_per_s"]
    return True, (f"{p.bench_teacher} -> {p.bench_student} samples/s CE {s['ce']:.0f}, KD+cache {s['kd_cache']:.0f}, "
                  f"KD recompute {s['kd_recompute']:.0f}; cache/CE {kd_['kd_cache/ce']:.3f}, recompute/cache "
                  f"{kd_['kd_recompute/kd_cache']:.2f}; {ens}")


# ---------------------------------------------------------------- check 4


def check_paper(ctx: Context, fig: dict) -> tuple[bool, str]:
    from ckptkd.select import POLICIES

    p, dev = ctx.p, ctx.device
    spec, data = ctx.spec("c100"), ctx.data("c100")
    run = ctx.work / "paper" / "teacher"
    save_every = max(1, p.paper_epochs // 4)
    fig.update(teacher=p.paper_teacher, student=p.paper_student, n_train=len(data.x_train), classes=data.num_classes,
               teacher_epochs=p.paper_epochs, student_epochs=p.paper_student_epochs, finished=[])
    t0 = time.perf_counter()
    cli("train", "--data", spec, "--model", p.paper_teacher, "--epochs", str(p.paper_epochs), "--save-every",
        str(save_every), "--batch-size", str(BATCH), "--device", dev.type, "--out", str(run), "--quiet")
    fig["teacher_s"] = round(time.perf_counter() - t0, 1)
    fig["teacher_acc"] = Run(run).metrics()[-1]["test_acc"]
    fig["finished"].append("train")
    t0 = time.perf_counter()
    rows = json.loads(cli("analyze", str(run), "--device", dev.type, "--probe-size", str(p.paper_probe), "--quiet",
                          "--json"))["rows"]
    fig["analyze_s"] = round(time.perf_counter() - t0, 1)
    fig["scores"] = {r["epoch"]: round(r["score"], 4) for r in rows}
    fig["finished"].append("analyze")
    fig["policies"] = {}
    for policy in POLICIES:
        if ctx.remaining() < 0:
            fig["policies"][policy] = {"skipped": "time limit"}
            continue
        if POLICIES[policy].takes_epochs:  # explicit: the user's epochs, nothing to choose
            fig["policies"][policy] = {"skipped": "takes the user's epochs"}
            continue
        # each policy gets the flags of the inputs it reads (select refuses the others): the probe
        # size for the information policies, the student settings for proxy's short distillations
        needs = POLICIES[policy].needs
        flags = (["--device", dev.type] if needs else []) + (
            ["--probe-size", str(p.paper_probe)] if "analysis" in needs else []) + (
            ["--student-model", p.paper_student, "--student-epochs", str(p.paper_student_epochs)]
            if "proxy" in needs else [])
        try:
            chosen = json.loads(cli("select", str(run), "--policy", policy, *flags, "--quiet", "--json"))["chosen"]
        except RuntimeError as e:  # a policy may refuse this run (exit 2: e.g. proxy-full on the tiny profile's data)
            if "exited 2:" not in str(e):
                raise
            fig["policies"][policy] = {"skipped": "refused: " + str(e).split("error: ", 1)[-1]}
            continue
        out = ctx.work / "paper" / f"student-{policy}"
        t0 = time.perf_counter()
        cli("distill", "--data", spec, *[a for c in chosen for a in ("--teacher", c["path"])], "--model",
            p.paper_student, "--epochs", str(p.paper_student_epochs), "--batch-size", str(BATCH), "--device",
            dev.type, "--out", str(out), "--quiet")
        fig["policies"][policy] = {"epochs": [c["epoch"] for c in chosen], "student_acc": Run(out).metrics()[-1]["test_acc"],
                                   "seconds": round(time.perf_counter() - t0, 1)}
        fig["finished"].append(f"distill {policy}")
    done = {k: v for k, v in fig["policies"].items() if "student_acc" in v}
    return bool(done), (f"{p.paper_teacher} -> {p.paper_student}, {data.num_classes} classes: teacher acc "
                        f"{pct(fig['teacher_acc'])} in {fig['teacher_s']:.0f} s, analyze {fig['analyze_s']:.0f} s; "
                        + ", ".join(f"{k} epochs {v['epochs']} -> {pct(v['student_acc'])}" for k, v in done.items())
                        + "".join(f"; {k}: {v['skipped']}" for k, v in fig["policies"].items() if "skipped" in v))


CHECK_FUNCTIONS = {"cpu_vs_cuda": check_cpu_vs_cuda, "train": check_train, "ensemble": check_ensemble,
                   "cache": check_cache, "compile": check_compile, "torchrun": check_torchrun,
                   "throughput": check_throughput, "paper": check_paper}


# ---------------------------------------------------------------- running


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


class Report:
    """gpu_check.json, rewritten (atomically) after every check."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data = path, {**head, "checks": {}}

    def save(self) -> None:
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def run_check(name: str, fn, ctx: Context, report: Report) -> dict:
    """Run one check, never raising (but for SIGTERM): ok / FAIL / partial, its figures, its time."""
    entry = {"group": GROUP[name], "status": "FAIL", "summary": "", "error": None, "figures": {}, "seconds": None}
    report.data["checks"][name] = entry
    t0 = time.perf_counter()
    try:
        ok, entry["summary"] = fn(ctx, entry["figures"])
        entry["status"] = "ok" if ok else "FAIL"
    except Interrupted:
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        if name == "paper" and entry["figures"].get("finished"):
            entry["status"], entry["summary"] = "partial", f"stopped at the time limit after {entry['figures']['finished']}"
        else:
            entry["error"] = entry["summary"] = "interrupted at the time limit"
        report.save()
        print_line(name, entry)
        raise
    except Exception as e:  # noqa: BLE001 - every failure is a result to record, and the next check runs
        entry["error"] = first_line(e)
        entry["summary"] = entry["error"]
        entry["traceback"] = traceback.format_exc().splitlines()[-40:]
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    report.save()
    print_line(name, entry)
    return entry


def print_line(name: str, entry: dict) -> None:
    status = {"ok": "ok", "FAIL": "FAIL", "partial": "ok", "skipped": "skip"}[entry["status"]]
    print(f"{status:<4} {GROUP[name]} {name:<11} {entry['summary']}  ({entry['seconds']} s)", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cuda (default); cpu with --force runs every check on CPU as a dry run")
    p.add_argument("--force", action="store_true", help="with --device cpu: run the whole list on CPU")
    p.add_argument("--profile", choices=("auto", *PROFILES), default="auto",
                   help="sizes: full (a GPU), tiny (a CPU dry run); auto: full on CUDA, tiny otherwise")
    p.add_argument("--out", default=".", help="folder for gpu_check.json (default: the current folder)")
    p.add_argument("--json", help="the JSON file (default OUT/gpu_check.json); with --write-docs, the one to read")
    p.add_argument("--work", help="keep the data and runs in a new folder inside WORK "
                                  "(default: a temporary folder, removed)")
    p.add_argument("--time-limit", type=float, default=450.0,
                   help="seconds: no check starts after it, check 4 only with time left (default 450)")
    p.add_argument("--only", help=f"comma-separated checks to run, of {','.join(CHECKS)}")
    p.add_argument("--skip", default="", help="comma-separated checks to skip")
    p.add_argument("--write-docs", action="store_true",
                   help="rewrite the GPU table of docs/benchmarks.md from the JSON, then exit")
    p.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"), help="the file --write-docs rewrites")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    json_path = Path(args.json) if args.json else Path(args.out) / "gpu_check.json"
    if args.write_docs:
        return write_docs(json_path, Path(args.docs))
    names = [n for n in (args.only.split(",") if args.only else CHECKS) if n not in args.skip.split(",")]
    unknown = [n for n in names + [s for s in args.skip.split(",") if s] if n not in CHECKS]
    if unknown:
        print(f"gpu_check: error: unknown check {unknown[0]!r}; the checks are {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.force:
        print("gpu_check: error: --device cpu runs the GPU checks on CPU as a dry run; add --force", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    no_cuda = args.device == "cuda" and not cuda
    device = torch.device("cpu" if no_cuda else args.device)
    profile = PROFILES[args.profile if args.profile != "auto" else ("full" if device.type == "cuda" else "tiny")]
    head = {"format": FORMAT, "version": 1, "command": " ".join(["scripts/gpu_check.py", *(argv or sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device.type,
            "dry_run": device.type == "cpu" and not no_cuda,
            "profile": asdict(profile), "time_limit_s": args.time_limit, "environment": environment(device),
            "no_cuda": None}
    report = Report(json_path, head)
    gpu = head["environment"].get("gpu", "no GPU")
    print(f"gpu_check: device {device.type} ({gpu}), torch {torch.__version__}, profile {profile.name}, "
          f"time limit {args.time_limit:.0f} s", flush=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
            work = Path(tmp)
            if args.work:  # kept: a fresh folder in it for every run, so runs never collide
                Path(args.work).mkdir(parents=True, exist_ok=True)
                work = Path(tempfile.mkdtemp(prefix="gpu_check.", dir=args.work))
            report.data["work"] = str(work.resolve()) if args.work else None
            ctx = Context(args, device, profile, work.resolve())
            if no_cuda:
                entry = run_check("cpu_vs_cuda", check_cpu_half_only, ctx, report)
                report.data["no_cuda"] = (f"no CUDA: torch {torch.__version__} sees no GPU "
                                          "(torch.cuda.is_available() is False); ran the CPU half of check 1 only")
                print(report.data["no_cuda"])
                failed = entry["status"] == "FAIL"
            else:
                failed = run_all(names, ctx, report)
    except Interrupted:
        failed = True
        print("gpu_check: stopped by SIGTERM (the time limit); gpu_check.json holds what finished", flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        report.data["wall_s"] = round(time.perf_counter() - t0, 1)
        report.data["ok"] = all(c["status"] in ("ok", "partial", "skipped") for c in report.data["checks"].values())
        report.save()
    counts = {s: sum(c["status"] == s for c in report.data["checks"].values()) for s in ("ok", "partial", "FAIL", "skipped")}
    print(f"wrote {json_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + f" in {report.data['wall_s']:.0f} s", flush=True)
    return 1 if failed else 0


def run_all(names: list[str], ctx: Context, report: Report) -> bool:
    failed = False
    for name in names:
        late = ctx.remaining() < (ctx.p.paper_min_s if name == "paper" else 0)
        if late:
            report.data["checks"][name] = entry = {"group": GROUP[name], "status": "skipped", "seconds": 0,
                                                   "summary": "skipped: not enough time left", "figures": {}}
            report.save()
            print_line(name, entry)
            continue
        entry = run_check(name, CHECK_FUNCTIONS[name], ctx, report)
        failed |= entry["status"] == "FAIL"
    return failed


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum, frame):
    raise Interrupted()


# ---------------------------------------------------------------- docs/benchmarks.md


BEGIN = "<!-- gpu-check: begin (written by python scripts/gpu_check.py --write-docs; edits here are lost) -->"
END = "<!-- gpu-check: end -->"


def _get(checks: dict, name: str, *path):
    node = checks[name]["figures"]
    for key in path:
        node = node[str(key)] if isinstance(node, dict) and str(key) in node else node[key]
    return node


def _agreement(kind: str):
    def fmt(c):
        return f"{pct(_get(c, 'cpu_vs_cuda', kind, 'argmax_agreement'))}, {_get(c, 'cpu_vs_cuda', kind, 'max_abs_diff'):.1e}"
    return fmt


def _ens(k: int, what: str):
    def fmt(c):
        e = _get(c, "throughput", "ensembles", k)
        if what == "forward":
            return ", ".join(f"batch {key[9:]}: {v['loop_ms']:.1f} / {v['vmap_ms']:.1f} ms, **{v['vmap/loop']:.2f}**"
                             for key, v in e.items() if key.startswith("forward_b"))
        r = e["kd_recompute"]
        return f"{r['loop_samples_per_s']:.0f} / {r['vmap_samples_per_s']:.0f}, time vmap/loop **{r['vmap/loop_time']:.2f}**"
    return fmt


# (check, row, value from the checks of gpu_check.json): the table's rows, filled or empty
DOC_ROWS = [
    ("cpu_vs_cuda", "resnet8 logits, CPU vs CUDA fp32 (TF32 off): argmax agreement, max abs diff",
     _agreement("fp32")),
    ("cpu_vs_cuda", "CPU vs CUDA defaults (TF32 convolutions, as `ckptkd eval`)",
     _agreement("cuda_defaults")),
    ("cpu_vs_cuda", "CPU vs CUDA bf16 autocast (as training)",
     _agreement("bf16")),
    ("train", "`ckptkd train` resnet8, bf16 + channels_last: samples/s",
     lambda c: f"{_get(c, 'train', 'cli', 'samples_per_s'):.0f}"),
    ("train", "dtype and channels_last seen inside `fit`",
     lambda c: f"{'/'.join(_get(c, 'train', 'inside', 'dtype'))}, {_get(c, 'train', 'inside', 'channels_last')}"),
    ("ensemble", "4-checkpoint teacher, vmap vs loop, max abs diff: fp32 / bf16",
     lambda c: f"{_get(c, 'ensemble', 'fp32_max_abs_diff'):.1e} / {_get(c, 'ensemble', 'autocast_max_abs_diff'):.1e}"),
    ("ensemble", "`ensemble=\"auto\"` takes vmap on CUDA",
     lambda c: str(_get(c, "ensemble", "auto_uses_vmap"))),
    ("cache", "cache build on the GPU (4 checkpoints): seconds",
     lambda c: f"{_get(c, 'cache', 'build_s'):.2f}"),
    ("cache", "cached targets vs the loop's bf16 teacher: max / mean abs diff",
     lambda c: f"{_get(c, 'cache', 'targets', 'max_abs_diff'):.1e} / {_get(c, 'cache', 'targets', 'mean_abs_diff'):.1e}"),
    ("cache", "cached student rebuilt bit for bit (deterministic); identical to the no-cache student",
     lambda c: f"{_get(c, 'cache', 'rerun_identical')}; {_get(c, 'cache', 'vs_no_cache_identical')}"),
    ("compile", "`compile: true` resnet8: steps, samples/s compiled / eager (last epoch)",
     lambda c: f"{_get(c, 'compile', 'steps')}, {_get(c, 'compile', 'compiled', 'last_epoch_samples_per_s'):.0f} / "
               f"{_get(c, 'compile', 'eager', 'last_epoch_samples_per_s'):.0f}"),
    ("torchrun", "`torchrun --nproc_per_node 1`; SyncBatchNorm exercised",
     lambda c: f"{'ok' if all(r['complete'] for r in _get(c, 'torchrun', 'runs').values()) else 'failed'}; "
               f"{_get(c, 'torchrun', 'syncbatchnorm_exercised')}"),
    ("throughput", "resnet56 → resnet20 samples/s: CE / KD + cache / KD recompute",
     lambda c: " / ".join(f"{_get(c, 'throughput', 'kd', 'samples_per_s', k):.0f}"
                          for k in ("ce", "kd_cache", "kd_recompute"))),
    ("throughput", "**KD + cache / CE** (time per epoch)",
     lambda c: f"**{_get(c, 'throughput', 'kd', 'kd_cache/ce'):.3f}**"),
    ("throughput", "KD recompute / KD + cache (time per epoch)",
     lambda c: f"{_get(c, 'throughput', 'kd', 'kd_recompute/kd_cache'):.2f}"),
    *[("throughput", f"K={k} resnet56 teacher forward, loop / vmap ms, **vmap/loop**", _ens(k, "forward"))
      for k in (2, 4, 8)],
    *[("throughput", f"K={k} KD recompute samples/s loop / vmap", _ens(k, "kd")) for k in (2, 4, 8)],
    ("paper", "wrn_40_2 → wrn_40_1, synthetic CIFAR-100: teacher acc; student acc per policy (chosen epochs)",
     lambda c: f"{pct(_get(c, 'paper', 'teacher_acc'))}; " + ", ".join(
         f"{k} {v['epochs']} {pct(v['student_acc'])}" if "student_acc" in v else f"{k}: {v['skipped']}"
         for k, v in _get(c, "paper", "policies").items())),
]


def render_table(report: dict | None) -> str:
    """The block between the markers: what was measured, and the table (empty without a report)."""
    checks = (report or {}).get("checks", {})
    if report is None:
        head = ("Not yet run on a GPU: every value is empty until `bash scripts/gpu_check.sh` runs on one "
                "and `python scripts/gpu_check.py --write-docs` fills it.")
    else:
        env = report["environment"]
        head = (f"Measured by `bash scripts/gpu_check.sh` ({report['started'][:10]}, {report['wall_s']:.0f} s) on "
                f"{env.get('gpu', report['device'])}, torch {env['torch']}, CUDA {env.get('cuda')}; table by "
                f"`python scripts/gpu_check.py --write-docs`.")
    lines = [head, "", "| check | measurement | value | status |", "|---|---|---|---|"]
    for name, label, value in DOC_ROWS:
        text, status = "—", "—"
        if name in checks:
            status = checks[name]["status"]
            try:
                text = value(checks)
            except (KeyError, TypeError, ValueError, AttributeError):
                text = "—"
        lines.append(f"| {GROUP[name]} `{name}` | {label} | {text} | {status} |")
    return "\n".join(lines)


def write_docs(json_path: Path, docs: Path) -> int:
    try:
        report = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        print(f"gpu_check: error: cannot read {json_path} ({first_line(e)})", file=sys.stderr)
        return 2
    if report.get("format") != FORMAT or report.get("device") != "cuda" or report.get("profile", {}).get("name") != "full":
        print(f"gpu_check: error: {json_path} is not a gpu_check.json of a full CUDA run (device "
              f"{report.get('device')!r}, profile {report.get('profile', {}).get('name')!r}); the GPU table takes "
              "those figures only", file=sys.stderr)
        return 2
    text = docs.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        print(f"gpu_check: error: {docs} needs exactly one pair of gpu-check markers", file=sys.stderr)
        return 2
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    docs.write_text(f"{before}{BEGIN}\n{render_table(report)}\n{END}{after}")
    print(f"wrote the GPU table of {docs} from {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
