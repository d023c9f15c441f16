"""Streaming image folders against loading them into memory: time to the first batch, peak RSS and samples/s.

Writes image folders of 10,000 and 100,000 random-texture 32x32 PNGs (10 classes,
``imagefolder`` layout; with multiprocessing and Pillow) into a temporary folder, then
for each size distils a resnet8 student with the teacher-output cache (one view: one
epoch; the teacher is two strided convolutions, so building the cache of 100,000 images
takes seconds) four ways: in memory, and streamed with 0, 1 and 2 DataLoader workers. Every configuration runs in a fresh process:

    measure (one per configuration)  ->  child: load the data, build or open the cache,
                                         run ``fit`` for WARMUP + STEPS steps of KD

``samples/s`` is STEPS x batch size over the wall time of the STEPS steps after WARMUP
untimed ones (data waits included). ``main RSS`` is the child's own peak (its ru_maxrss);
``largest RSS`` is ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in the measuring
process, the peak of the largest process of the tree (the child or a decoding worker).
``load s`` is the time to list, check and scan (streamed) or decode (in memory) the images.
The teacher cache is shared by the configurations of one size and mode, so only the first
builds it. The RSS growth from 10k to 100k is reported per configuration.

    python benchmarks/bench_streaming.py                  # both sizes, about 5 min on 2 cores
    python benchmarks/bench_streaming.py --sizes 10000    # the small one only
    python benchmarks/bench_streaming.py --memory-sizes 10000   # in memory at 10k only (it is 1.2 GB at 100k)

``--first-batch`` measures how soon a streamed training starts instead: a fresh process per
size loads the folder with ``data.stream: true`` and trains a resnet8 until the first batch
reaches the loss; ``first batch s`` is the wall time from the ``load_dataset`` call to then
(listing, the byte pass, the statistics' sample, the model, the workers' start and the first
decode), ``load s`` the part that is ``load_dataset``; RSS as above. PyTorch's own lazy imports
on the first optimizer (``torch._dynamo``, 2 to 6 s on a loaded machine, whatever the data) are
done before the clock starts and printed as ``torch_import_s``. ``--folders DIR`` keeps the
image folders there to reuse (written once; 100,000 8x8 PNGs take about 400 MB of disk), and
``--side`` sets their size:

    nice -n 10 python benchmarks/bench_streaming.py --first-batch --side 8 --folders /tmp/bench-images
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 10
CONFIGS = [("memory", 0), ("stream", 0), ("stream", 1), ("stream", 2)]


def _write_chunk(args) -> None:
    root, start, stop, side = args
    from PIL import Image

    rng = np.random.default_rng(start)
    for i in range(start, stop):
        c = i % CLASSES
        # smooth textures (a 4x4 pattern upsampled, plus noise): not incompressible noise
        base = rng.integers(0, 256, (4, 4, 3)).repeat(side // 4, 0).repeat(side // 4, 1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape) + 10 * c, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, f"c{c}", f"{i:06d}.png"), compress_level=1)


def make_folder(root: Path, n: int, side: int = 32) -> Path:
    """``root`` holding ``n`` PNGs of side x side, written unless a previous call finished them."""
    done = root / ".complete"  # hidden: not part of the class layout
    if done.exists():
        return root
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    step = 1000
    with multiprocessing.Pool() as pool:
        pool.map(_write_chunk, [(str(root), s, min(s + step, n), side) for s in range(0, n, step)])
    done.touch()
    return root


def tiny_teacher(num_classes: int, in_shape):
    """The teacher: two strided convolutions. Its weights are random; only the cache build
    runs it, and what the student's steps cost does not depend on what the cache holds."""
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(in_shape[0], 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def child(folder: str, mode: str, workers: int, cache: str, steps: int, warmup: int, batch: int) -> None:
    """One configuration, in this process: prints a JSON line of its measurements."""
    import torch

    from ckptkd import KD, DataConfig, KDConfig, StageConfig, Teacher, load_dataset
    from ckptkd.teacher_cache import TeacherCache
    from ckptkd.train import build_model, fit

    class Done(Exception):
        pass

    class Timed(KD):
        step, t0 = 0, 0.0

        def __call__(self, model, x, y, idx, epoch):
            self.step += 1
            if self.step == warmup + 1:
                self.t0 = time.perf_counter()
            if self.step == warmup + steps + 1:
                raise Done(time.perf_counter() - self.t0)
            return super().__call__(model, x, y, idx, epoch)

    t = time.perf_counter()
    data = load_dataset(DataConfig(spec=f"imagefolder:{folder}", test_fraction=0.05, stream=mode == "stream",
                                   workers=workers))
    load_s = time.perf_counter() - t
    stage = StageConfig(model="resnet8", epochs=1, batch_size=batch)
    teacher = Teacher([build_model("bench_streaming:tiny_teacher", data, seed=1)])
    t = time.perf_counter()
    table = TeacherCache.build(cache, teacher, data, KDConfig().temperature, views=1)
    cache_s = time.perf_counter() - t
    student = build_model("resnet8", data, seed=0)
    try:
        fit(student, Timed(teacher, KDConfig(), table), data, stage, seed=0, progress=False)
        raise SystemExit("the epoch ended before the timed steps did: lower --steps")
    except Done as done:
        seconds = done.args[0]
    print(json.dumps({"load_s": load_s, "cache_s": cache_s, "samples_per_s": steps * batch / seconds,
                      "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "train": len(data.x_train), "threads": torch.get_num_threads()}))


def first_batch_child(folder: str, workers: int, batch: int) -> None:
    """Load ``folder`` streamed and train until the first batch reaches the loss: prints a JSON line."""
    import torch

    from ckptkd import DataConfig, StageConfig, load_dataset
    from ckptkd.train import CrossEntropy, build_model, fit

    class Done(Exception):
        pass

    class First(CrossEntropy):
        def __call__(self, model, x, y, idx, epoch):
            raise Done(time.perf_counter())

    t = time.perf_counter()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # PyTorch's lazy imports (dynamo), any data's cost
    torch_s = time.perf_counter() - t
    t0 = time.perf_counter()
    data = load_dataset(DataConfig(spec=f"imagefolder:{folder}", test_fraction=0.05, stream=True, workers=workers))
    load_s = time.perf_counter() - t0
    try:
        fit(build_model("resnet8", data, seed=0), First(), data, StageConfig(model="resnet8", epochs=1,
                                                                            batch_size=batch), seed=0, progress=False)
        raise SystemExit("no batch reached the loss")
    except Done as done:
        first_s = done.args[0] - t0
    print(json.dumps({"load_s": load_s, "first_batch_s": first_s, "torch_import_s": torch_s, "train": len(data.x_train),
                      "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads()}))


def first_batches(args) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        for n in args.sizes:
            folder = make_folder(Path(args.folders or tmp) / f"images{n}-{args.side}px", n, args.side)
            out = subprocess.run([sys.executable, __file__, "--measure-first", str(folder), str(args.workers),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            r = {"images": n, **json.loads(out.stdout.strip().splitlines()[-1])}
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
    lines = [f"| images ({args.side}x{args.side} PNG) | workers | load s | first batch s | main RSS MB | "
             "largest RSS MB |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']:,} | {args.workers} | {r['load_s']:.2f} | {r['first_batch_s']:.2f} | "
              f"{r['main_rss_mb']:.0f} | {r['largest_rss_mb']:.0f} |" for r in rows]
    if len(rows) == 2:
        a, b = sorted(rows, key=lambda r: r["images"])
        lines += ["", f"RSS growth from {a['images']:,} to {b['images']:,} images: main "
                  f"{100 * (b['main_rss_mb'] / a['main_rss_mb'] - 1):+.1f}%, largest "
                  f"{100 * (b['largest_rss_mb'] / a['largest_rss_mb'] - 1):+.1f}%"]
    return "\n".join(lines)


def measure(argv: list[str], child_flag: str = "--child") -> None:
    """Run one child and add the peak RSS of its whole process tree to what it prints."""
    out = subprocess.run([sys.executable, __file__, child_flag, *argv], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["largest_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--memory-sizes", type=int, nargs="*", help="sizes to also run in memory (default: all)")
    p.add_argument("--child", nargs=4, metavar=("FOLDER", "MODE", "WORKERS", "CACHE"))
    p.add_argument("--measure", nargs=4, metavar=("FOLDER", "MODE", "WORKERS", "CACHE"))
    p.add_argument("--first-batch", action="store_true", help="time to the first streamed batch instead")
    p.add_argument("--workers", type=int, default=2, help="--first-batch: decoding workers (data.workers)")
    p.add_argument("--side", type=int, default=32, help="image side in pixels (a multiple of 4)")
    p.add_argument("--folders", help="keep the image folders in this folder, to reuse (default: a temporary one)")
    p.add_argument("--first-child", nargs=2, metavar=("FOLDER", "WORKERS"))
    p.add_argument("--measure-first", nargs=2, metavar=("FOLDER", "WORKERS"))
    args = p.parse_args()
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    if args.child:
        folder, mode, workers, cache = args.child
        return child(folder, mode, int(workers), cache, args.steps, args.warmup, args.batch_size)
    if args.measure:
        return measure([*args.measure, *common])
    if args.first_child:
        return first_batch_child(args.first_child[0], int(args.first_child[1]), args.batch_size)
    if args.measure_first:
        return measure([*args.measure_first, "--batch-size", str(args.batch_size)], "--first-child")
    if args.first_batch:
        return print(first_batches(args))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        for n in args.sizes:
            t = time.perf_counter()
            folder = make_folder(Path(args.folders or tmp) / f"images{n}-{args.side}px", n, args.side)
            print(f"wrote {n} PNGs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            for mode, workers in CONFIGS:
                if mode == "memory" and args.memory_sizes is not None and n not in args.memory_sizes:
                    continue
                cache = str(Path(tmp) / f"cache{n}-{mode}")
                out = subprocess.run([sys.executable, __file__, "--measure", str(folder), mode, str(workers), cache,
                                      *common], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(out.stderr)
                r = {"images": n, "mode": mode, "workers": workers, **json.loads(out.stdout.strip().splitlines()[-1])}
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
    print(table(rows, args))


def table(rows: list[dict], args) -> str:
    lines = ["| images | path | workers | load s | samples/s | in-memory / this | main RSS MB | largest RSS MB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mem = next((q["samples_per_s"] for q in rows if q["mode"] == "memory" and q["images"] == r["images"]), None)
        ratio = f"{mem / r['samples_per_s']:.2f}" if mem else "-"  # in memory at the same size only
        lines.append(f"| {r['images']:,} | {r['mode']} | {r['workers'] if r['mode'] == 'stream' else '-'} | "
                     f"{r['load_s']:.1f} | {r['samples_per_s']:.0f} | {ratio} | "
                     f"{r['main_rss_mb']:.0f} | {r['largest_rss_mb']:.0f} |")
    if len(args.sizes) == 2:
        lines += ["", "| path | workers | main RSS growth, 10x the images | largest RSS growth |", "|---|---:|---:|---:|"]
        small, large = sorted(args.sizes)
        for mode, workers in CONFIGS:
            a, b = (next((r for r in rows if (r["images"], r["mode"], r["workers"]) == (n, mode, workers)), None)
                    for n in (small, large))
            if a is None or b is None:
                continue
            lines.append(f"| {mode} | {workers if mode == 'stream' else '-'} | "
                         f"{100 * (b['main_rss_mb'] / a['main_rss_mb'] - 1):+.1f}% | "
                         f"{100 * (b['largest_rss_mb'] / a['largest_rss_mb'] - 1):+.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
