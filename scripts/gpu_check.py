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
                    targets are compared against a tolerance, TARGET_TOL in gpu_checks/check_cache.py).
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
# This file is the command line; the checks live in scripts/gpu_checks/, one module a check or
# group (its __init__ lists them).
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):  # the ckptkd this script sits in, and the checks beside it
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# the package first: it sets CUBLAS_WORKSPACE_CONFIG before torch is imported
from gpu_checks.check_cpu_vs_cuda import check_cpu_half_only  # noqa: E402
from gpu_checks.common import CHECKS, FORMAT, PROFILES, REPO  # noqa: E402
from gpu_checks.context import Context  # noqa: E402
from gpu_checks.docs_table import BEGIN, DOC_ROWS, END, write_docs  # noqa: E402
from gpu_checks.runner import (CHECK_FUNCTIONS, Interrupted, Report, environment, in_main_thread,  # noqa: E402
                               on_sigterm, run_all, run_check)

import torch  # noqa: E402

# what tests/test_gpu_check.py reads of this script (CHECK_FUNCTIONS is the table run_all uses)
__all__ = ["BEGIN", "CHECK_FUNCTIONS", "DOC_ROWS", "END", "main"]


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
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread() else None
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
    counts = {s: sum(c["status"] == s for c in report.data["checks"].values())
              for s in ("ok", "partial", "FAIL", "skipped")}
    print(f"wrote {json_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + f" in {report.data['wall_s']:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
