"""``--write-docs``: the GPU table of docs/benchmarks.md, between its markers, from a
gpu_check.json of a full CUDA run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import FORMAT, GROUP, first_line, pct

BEGIN = "<!-- gpu-check: begin (written by python scripts/gpu_check.py --write-docs; edits here are lost) -->"
END = "<!-- gpu-check: end -->"


def _get(checks: dict, name: str, *path):
    node = checks[name]["figures"]
    for key in path:
        node = node[str(key)] if isinstance(node, dict) and str(key) in node else node[key]
    return node


def _agreement(kind: str):
    def fmt(c):
        return (f"{pct(_get(c, 'cpu_vs_cuda', kind, 'argmax_agreement'))}, "
                f"{_get(c, 'cpu_vs_cuda', kind, 'max_abs_diff'):.1e}")
    return fmt


def _ens(k: int, what: str):
    def fmt(c):
        e = _get(c, "throughput", "ensembles", k)
        if what == "forward":
            return ", ".join(f"batch {key[9:]}: {v['loop_ms']:.1f} / {v['vmap_ms']:.1f} ms, **{v['vmap/loop']:.2f}**"
                             for key, v in e.items() if key.startswith("forward_b"))
        r = e["kd_recompute"]
        return (f"{r['loop_samples_per_s']:.0f} / {r['vmap_samples_per_s']:.0f}, "
                f"time vmap/loop **{r['vmap/loop_time']:.2f}**")
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
     lambda c: (f"{_get(c, 'cache', 'targets', 'max_abs_diff'):.1e} / "
                f"{_get(c, 'cache', 'targets', 'mean_abs_diff'):.1e}")),
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
    if (report.get("format") != FORMAT or report.get("device") != "cuda"
            or report.get("profile", {}).get("name") != "full"):
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
