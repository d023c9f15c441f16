"""Write docs/results.md from finished study folders: every number comes from results.json.

    python scripts/make_results.py runs/studies/mnist1d runs/studies/digits runs/studies/mnist1d-noisy \
        --rerun runs/studies/mnist1d-noisy-first runs/studies/mnist1d-noisy-rerun

``--rerun A B`` compares an earlier run A of a study with B, the run shown in the tables, and
reports how many cells agree exactly. ``--methods A B ...`` (last) adds the student-vs-checkpoint
curves of one study under several distillation methods (``scripts/compare_methods.py``).

The reading of each study is generated from the same numbers (which teacher won, by how much,
against what seed noise); the hand-written text lives in docs/results_intro.md and
docs/results_reading.md and holds no numbers.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ckptkd.report.study import noise, render_markdown, table_ensembles, table_intermediate, verdicts

ROOT = Path(__file__).resolve().parent.parent


def pct(v: float) -> str:
    return f"{100 * v:+.2f}"


def reading(results: dict) -> str:
    inter = {r["teacher"]: r for r in table_intermediate(results)}
    v = verdicts(results, "mi")
    nz = noise(results)
    full, best, half, nokd = (inter[k] for k in ("full (last)", "best intermediate", "halfway", "none (no KD)"))
    lines = [
        f"- KD from the full teacher vs no KD: {pct(full['student_mean'] - nokd['student_mean'])} points "
        f"(seed noise, pooled std over student seeds: {100 * nz:.2f}).",
        f"- Best intermediate checkpoint (epoch {best['epoch']}, in hindsight) vs full teacher: "
        f"{pct(best['delta_vs_full'])}; halfway (epoch {half['epoch']}): {pct(half['delta_vs_full'])}. "
        + ("The best intermediate teacher's margin is within the seed noise."
           if abs(best["delta_vs_full"]) <= nz else
           "The best intermediate teacher's margin exceeds the seed noise."),
    ]
    rows = {r["ensemble"]: r for r in table_ensembles(results)}
    full_e = rows.get("full ensemble (independent runs, last)")
    snap = next((r for k, r in rows.items() if k.startswith("snapshot, halfway + last")), None)
    if full_e and snap:
        lines.append(f"- Snapshot ensemble (halfway + last) vs full ensemble of independent runs: student "
                     f"{pct(snap['student_mean'] - full_e['student_mean'])} points.")
    if v["measured"]:
        lines.append(f"- Algorithm 1 ({results['config']['info']['estimator']} total) picked epoch {v['epoch']}, "
                     f"regret {100 * v['regret']:.2f} ({'within' if v['within_noise_of_best'] else 'outside'} "
                     "the seed noise), "
                     f"{pct(v['vs_last'])} vs the full teacher's student, Spearman ρ {v['spearman']:.2f}.")
    return "\n".join(lines)


def section(folder: Path) -> str:
    results = json.loads((folder / "results.json").read_text())
    cfg = results["config"]
    inv = results.get("invocations", [])
    last = max(inv, key=lambda i: i.get("cells_run") or 0) if inv else {}  # the one that did the work
    config_path = f"configs/studies/{cfg['name']}.yaml"
    total = len(results["teachers"]) + len(results["students"])
    timed = [i for i in inv if i.get("elapsed_s") is not None]
    untimed = len(inv) - len(timed)
    ran = sum(i.get("cells_run") or 0 for i in inv)
    parts = [f"{total} cells; {len(inv)} logged invocation(s) ran {ran} cells in "
             f"{sum(i['elapsed_s'] for i in timed) / 60:.1f} min of wall time"]
    if untimed:
        parts.append(f"{untimed} killed invocation(s) left no time")
    if ran < total:
        parts.append(f"the other {total - ran} cells were run before ckptkd logged invocations")
    parts.append(f"the busiest invocation used --jobs {last.get('jobs')} on {last.get('machine')}")
    parts.append(f"the cells' own wall times sum to {results.get('compute_s', 0) / 60:.1f} min")
    timing = "; ".join(parts) + "."
    img = ROOT / "docs" / "img"
    img.mkdir(exist_ok=True)
    plots = []
    for name in ("student_vs_epoch.png", "information_plane.png"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, img / f"{cfg['name']}-{name}")
            plots.append(f"![{name[:-4]}](img/{cfg['name']}-{name})")
    return "\n".join([
        f"## {cfg['name']}", "",
        "```bash", f"ckptkd study {config_path} --jobs {last.get('jobs', 1)} --out {folder}", "```", "",
        f"Timing: {timing}", "",
        render_markdown(results), " ".join(plots), "",
        "**Reading (generated from the numbers above)**", "", reading(results), "",
    ])


def rerun_section(a: Path, b: Path) -> str:
    """How many cells of two runs of one study (A earlier, B the one in the tables) agree exactly."""
    ra, rb = (json.loads((f / "results.json").read_text()) for f in (a, b))
    acc_a = {r["cell"]: r["acc"] for r in ra["teachers"] + ra["students"]}
    acc_b = {r["cell"]: r["acc"] for r in rb["teachers"] + rb["students"]}
    same = [c for c in acc_a if c in acc_b and acc_a[c] == acc_b[c]]
    differ = sorted(c for c in acc_a if c in acc_b and acc_a[c] != acc_b[c])
    teachers = [c for c in differ if c.startswith("teacher/")]
    va, vb = verdicts(ra, "mi"), verdicts(rb, "mi")
    return "\n".join([
        f"## Two runs of {rb['config']['name']}", "",
        f"`{a}` is an earlier run of the same study config; the tables above are from `{b}`.", "",
        f"- {len(same)} of {len(acc_a)} cells have exactly the same test accuracy in both runs; "
        f"teacher cells that differ: {', '.join(teachers) or 'none'}.",
        f"- Algorithm 1 in the earlier run: regret {100 * va['regret']:.2f}, Spearman ρ {va['spearman']:.2f}; "
        f"in the run above: regret {100 * vb['regret']:.2f}, Spearman ρ {vb['spearman']:.2f}.", "",
    ])


def methods_section(folders: list[str]) -> str:
    """One study under several ``kd.method``s: which checkpoint teaches best under each."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from compare_methods import comparison

    configs = [json.loads((Path(f) / "results.json").read_text())["config"] for f in folders]
    return "\n".join([
        "## Which checkpoint teaches best, by distillation method", "",
        "```bash", *[f"ckptkd study configs/studies/{c['name']}.yaml --method {c['kd']['method']} --out {f}"
                     for c, f in zip(configs, folders)],
        f"python scripts/compare_methods.py {' '.join(folders)}", "```", "",
        "The study config is a cheaper copy of blobs-noisy (fewer student seeds, five policies, one snapshot "
        "policy; its header says which) with the same teacher, so every method's students learn from one "
        "trajectory; kd.dkd.warmup is the official warm-up scaled to this student's schedule. Each folder holds "
        "one method (cell folders are named by checkpoint and seed; cell keys hold the method). Bold: the best "
        "checkpoint's student under that method. docs/distillation.md describes the methods. Its teacher was "
        "trained by the same code as the students; its accuracies differ slightly from the blobs-noisy section "
        "above, which an earlier version of ckptkd made. Every folder after the first was started with a copy of "
        "the first's cells/teacher, analysis and selection folders (teacher cells are keyed without the method, "
        "so they count as finished; run alone, its command trains the same teachers). A method listed twice was "
        "run by two versions of the code; the table names their folders.", "",
        comparison(folders), "",
    ])


def main(folders: list[str]) -> None:
    methods = []
    if "--methods" in folders:
        i = folders.index("--methods")
        methods, folders = folders[i + 1:], folders[:i]
    rerun = None
    if "--rerun" in folders:
        i = folders.index("--rerun")
        rerun, folders = (Path(folders[i + 1]), Path(folders[i + 2])), folders[:i] + folders[i + 3:]
    intro = (ROOT / "docs" / "results_intro.md").read_text()
    outro = (ROOT / "docs" / "results_reading.md").read_text()
    body = "\n".join(section(Path(f)) for f in folders)
    if rerun:
        body += "\n" + rerun_section(*rerun)
    if methods:
        body += "\n" + methods_section(methods)
    cmd = "python scripts/make_results.py " + " ".join(sys.argv[1:])
    text = f"{intro}\nThis file was written by `{cmd}`.\n\n{body}\n{outro}"
    (ROOT / "docs" / "results.md").write_text(text)
    print(f"wrote docs/results.md from {len(folders)} studies")


if __name__ == "__main__":
    main(sys.argv[1:])
