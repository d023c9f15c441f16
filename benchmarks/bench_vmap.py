"""Snapshot ensemble of K checkpoints: one vmapped pass over stacked weights vs a loop of K forwards.

Both run in this one process on the same members and batch, alternated round by round;
each figure is the median over rounds of CPU time (this process) and of wall time per
batch, no grad, eval mode. A ratio vmap/loop above 1 means the loop is faster; ckptkd's
``ensemble="auto"`` uses the loop on CPU because of these figures.

    python benchmarks/bench_vmap.py
    python benchmarks/bench_vmap.py --models cnn1d_l resnet8 --batch-size 128 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ckptkd import create_model
from ckptkd.ensemble import StackedEnsemble, loop_logits

def input_shape(spec: str) -> tuple[int, ...]:
    """MNIST-1D signals for the small models, CIFAR images for the others."""
    return (1, 40) if spec.startswith(("cnn1d", "mlp")) else (3, 32, 32)


def members(spec: str, k: int, in_shape) -> list[torch.nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(create_model(spec, 10, in_shape).eval())
    return out


def timed(fn, x, reps: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for _ in range(reps):
            fn(x)
    return {"cpu": (time.process_time() - cpu) / reps, "wall": (time.perf_counter() - wall) / reps}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cnn1d_m", "cnn1d_l", "resnet8"])
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--batch-size", type=int, default=128, help="128: the cache build's CPU batch")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=5, help="batches per timed block")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"batch {args.batch_size}, {args.rounds} rounds x {args.reps} batches, load {os.getloadavg()[0]:.2f}")
    print(f"{'model':<10} {'K':>2} {'loop ms':>8} {'vmap ms':>8} {'vmap/loop cpu':>13} {'vmap/loop wall':>14} "
          f"{'max |diff|':>10}")
    for spec in args.models:
        in_shape = input_shape(spec)
        x = torch.randn(args.batch_size, *in_shape)
        for k in args.ks:
            ms = members(spec, k, in_shape)
            stacked = StackedEnsemble(ms)
            sides = {"loop": lambda x, ms=ms: loop_logits(ms, x), "vmap": stacked}
            diff = (sides["loop"](x) - sides["vmap"](x)).abs().max().item()
            times = {name: [] for name in sides}
            for r in range(args.rounds):
                for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                    sides[name](x)  # warm
                    times[name].append(timed(sides[name], x, args.reps))
            med = {name: {c: statistics.median(t[c] for t in v) for c in ("cpu", "wall")} for name, v in times.items()}
            print(f"{spec:<10} {k:>2} {1e3 * med['loop']['cpu']:>8.2f} {1e3 * med['vmap']['cpu']:>8.2f} "
                  f"{med['vmap']['cpu'] / med['loop']['cpu']:>13.2f} {med['vmap']['wall'] / med['loop']['wall']:>14.2f} "
                  f"{diff:>10.1e}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
