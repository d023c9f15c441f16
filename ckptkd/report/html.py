"""``ckptkd report``: one self-contained HTML page for a run, a ``ckptkd run`` output, or a study.

Plots are PNGs embedded as base64 data URIs and the CSS is inline: no JavaScript, no fonts,
nothing fetched (a Content-Security-Policy forbids it), so the file can be mailed, archived
or opened offline. Every piece of text from the folder goes through ``html.escape``.

    RUN/report.html      a ``ckptkd train`` / ``distill`` run: training curves, checkpoints,
                         the information plane and score (analysis.json), the chosen checkpoint
    OUT/report.html      a ``ckptkd run`` output: the results table (pipeline.json), the
                         teacher's curves and analysis, the students
    STUDY/report.html    a study: its tables (``ckptkd.report.study``) and plots
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import CkptkdError
from ..io import atomic_write
from .markup import (Column, command_note, esc, facts, figure, fixed, is_number, number_or_nan, page, para, pct, png,
                     section, table, tag)

# ---------------------------------------------------------------- reading folders


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl, skipping a line cut short by a crash."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            out.append(rec)
    return out


def read_analysis(run_dir: Path) -> dict | None:
    """analysis.json when it holds rows with numbers for epoch, I(X;F), I(Y;F) and the score."""
    doc = _json(run_dir / "analysis.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        return None
    ok = all(isinstance(r, dict) and isinstance(r.get("epoch"), int) and all(is_number(r.get(k)) for k in
             ("ixf", "iyf", "score")) for r in doc["rows"])
    if not ok:
        return None
    if not isinstance(doc.get("settings"), dict):
        doc["settings"] = {}
    for r in doc["rows"]:
        if not is_number(r.get("teacher_acc")):
            r["teacher_acc"] = None
    return doc


def kind_of(folder: Path) -> str:
    if (folder / "results.json").exists() or (folder / "study.yaml").exists():
        return "study"
    if (folder / "pipeline.json").exists():
        return "pipeline"
    if (folder / "manifest.json").exists():
        return "run"
    raise CkptkdError(
        f"{str(folder)!r} is not a ckptkd run, ckptkd run output or study folder (it has no manifest.json, "
        "pipeline.json or results.json)"
    )


# ---------------------------------------------------------------- plots


def curves_figure(metrics: list[dict], checkpoint_epochs: Iterable[int] = (), title: str = ""):
    from .plots import integer_ticks, plt

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    # val every epoch; test once, at the end of training (a single marker)
    curves = (("train", "-", "o", 3), ("val", "--", "o", 3), ("test", "none", "*", 10))
    for key, label, style, marker, ms in ((f"{s}_loss", s, ls, mk, ms) for s, ls, mk, ms in curves):
        if any(key in m for m in metrics):
            ax_loss.plot(epochs, [number_or_nan(m, key) for m in metrics], ls=style, marker=marker, ms=ms, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title(f"{title} loss".strip())
    ax_loss.legend(fontsize=8)
    for key, label, style, marker, ms in ((f"{s}_acc", s, ls, mk, ms) for s, ls, mk, ms in curves):
        if any(key in m for m in metrics):
            ax_acc.plot(epochs, [number_or_nan(m, key, 100) for m in metrics], ls=style, marker=marker, ms=ms,
                        label=label)
    held_out = "val_acc" if any(is_number(m.get("val_acc")) for m in metrics) else "test_acc"  # older runs: test
    saved = [m for m in metrics if m["epoch"] in set(checkpoint_epochs) and is_number(m.get(held_out))]
    if saved:
        ax_acc.scatter([m["epoch"] for m in saved], [100 * m[held_out] for m in saved], s=60, facecolors="none",
                       edgecolors="C3", zorder=3, label="checkpoint saved")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy [%]")
    integer_ticks(ax_loss.xaxis)
    integer_ticks(ax_acc.xaxis)
    ax_acc.set_title(f"{title} accuracy".strip())
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def analysis_figures(rows: list[dict]) -> str:
    from .plots import information_plane, plt, score_vs_epoch

    out = []
    for draw, caption in ((information_plane, "information plane: I(X;F) against I(Y;F), by epoch"),
                          (score_vs_epoch, "Algorithm 1 score and teacher validation accuracy against epoch")):
        fig, ax = plt.subplots(figsize=(5.0, 3.8))
        draw(rows, ax)
        fig.tight_layout()
        out.append(figure(fig, caption))
    return "".join(out)


# ---------------------------------------------------------------- one run


def _run_parts(run_dir: Path, label: str, analyze_cmd: str) -> list[str]:
    """Training curves, checkpoints and the information analysis of one run folder."""
    manifest = _json(run_dir / "manifest.json") or {}
    metrics = read_metrics(run_dir)
    sidecars = []
    for path in sorted((run_dir / "checkpoints").glob("epoch_*.json")):
        meta = _json(path)
        if isinstance(meta, dict) and isinstance(meta.get("epoch"), int) and path.with_suffix(".safetensors").exists():
            sidecars.append(meta)
    sidecars.sort(key=lambda m: m["epoch"])
    parts = []

    curves = [facts([("model", manifest.get("model")), ("kind", manifest.get("kind")),
                     ("status", manifest.get("status")), ("classes", manifest.get("num_classes")),
                     ("input shape", tuple(manifest.get("in_shape") or ()) or None),
                     ("created", manifest.get("created")), ("epochs logged", len(metrics)),
                     ("checkpoints", len(sidecars))])]
    if metrics:
        curves.append(figure(curves_figure(metrics, [m["epoch"] for m in sidecars], label),
                             f"{label}: loss and accuracy against epoch (metrics.jsonl)"))
    else:
        curves.append(para("metrics.jsonl holds no epoch yet.", "warn"))
    parts.append(section(f"{label}: training", *curves))

    analysis = read_analysis(run_dir)
    info = []
    if analysis is None:
        info.append(command_note(f"No analysis.json in {run_dir}: the information plane and the scores come from",
                                 analyze_cmd, "warn"))
        best = None
    else:
        s = analysis.get("settings", {})
        rows = analysis["rows"]
        info.append(para(f"estimator {s.get('estimator')} on {s.get('features')} features, "
                         f"{analysis.get('probe_n')} probe samples, {s.get('scaling')} scaling, "
                         f"estimates in {analysis.get('unit', 'nats')}."))
        if any(r.get("saturated") for r in rows):
            info.append(para("Some estimates are within 5% of log N (saturated): raise the noise fraction or "
                             "the probe size.", "warn"))
        info.append(analysis_figures(rows))
        best = max(rows, key=lambda r: (r["score"], r["epoch"]))
        info.append(tag("p", esc(f"Algorithm 1 picks epoch {best['epoch']} (the highest score, "
                                 f"{best['score']:.3f}); ") + tag("code", esc(f"ckptkd select {run_dir}"))
                        + esc(" prints the ranking, and -k K picks a snapshot ensemble.")))
    by_epoch = {r["epoch"]: r for r in (analysis or {}).get("rows", [])}
    ckpt_rows = [{**m, **{k: by_epoch.get(m["epoch"], {}).get(k) for k in ("ixf", "iyf", "score")}}
                 for m in sidecars]
    columns: list[Column] = [("epoch", lambda r: r["epoch"]), ("train acc %", lambda r: pct(r.get("train_acc"))),
                             ("val acc %", lambda r: pct(r.get("val_acc"))),
                             ("val loss", lambda r: fixed(r.get("val_loss"), 4)),
                             ("test acc %", lambda r: pct(r.get("test_acc")))]
    if analysis is not None:
        columns += [("I(X;F)", lambda r: fixed(r["ixf"])), ("I(Y;F)", lambda r: fixed(r["iyf"])),
                    ("score", lambda r: fixed(r["score"]))]
    info.append(table(ckpt_rows, columns, caption=f"checkpoints of {label}" + (" (chosen one marked)" if best else ""),
                      mark=(lambda r: r["epoch"] == best["epoch"]) if best else None))
    parts.append(section(f"{label}: checkpoints and information", *info))
    return parts


def _config_section(path: Path, title: str = "configuration") -> str:
    try:
        text = path.read_text()
    except OSError:
        return ""
    return section(title, tag("pre", esc(text)))


def render_run(folder: Path) -> str:
    manifest = _json(folder / "manifest.json") or {}
    cfg = _json_yaml(folder / "config.yaml")
    data = (cfg.get("data") or {}).get("spec") if isinstance(cfg, dict) else None
    parts = _run_parts(folder, str(manifest.get("model", "model")), f"ckptkd analyze {folder}")
    parts.append(_config_section(folder / "config.yaml", "configuration (config.yaml)"))
    subtitle = (f"ckptkd {manifest.get('kind', 'train')} run of {manifest.get('model')}"
                + (f" on {data}" if data else ""))
    return page(f"ckptkd report: {folder.name or folder}", subtitle, parts)


def _json_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, RecursionError):
        return None


# ---------------------------------------------------------------- a ckptkd run output


def render_pipeline(folder: Path) -> str:
    doc = _json(folder / "pipeline.json") or {}
    cfg = doc.get("config") or {}
    teacher, student = cfg.get("teacher") or {}, cfg.get("student") or {}
    parts = []
    results = [facts([("teacher", f"{teacher.get('model')}, {teacher.get('epochs')} epochs, a checkpoint every "
                                  f"{teacher.get('save_every')}"),
                      ("student", f"{student.get('model')}, {student.get('epochs')} epochs"),
                      ("data", (cfg.get("data") or {}).get("spec")), ("seed", cfg.get("seed")),
                      ("selection", f"policy {(cfg.get('select') or {}).get('policy')}, "
                                    f"k {(cfg.get('select') or {}).get('k')}"),
                      ("KD", f"T {(cfg.get('kd') or {}).get('temperature')}, "
                             f"alpha {(cfg.get('kd') or {}).get('alpha')}"),
                      ("status", doc.get("status"))])]
    rows = doc.get("rows") or []
    if rows:
        results.append(table(rows, [("role", lambda r: r.get("role")), ("teacher", lambda r: r.get("teacher")),
                                    ("teacher acc %", lambda r: pct(r.get("teacher_acc"))),
                                    ("student acc %", lambda r: pct(r.get("student_acc")))],
                             caption="students by teacher (pipeline.json)",
                             mark=lambda r: str(r.get("role", "")).startswith("chosen")))
    else:
        results.append(command_note("The run is not complete, so there is no results table yet; continue it with",
                                    f"ckptkd run --out {folder} --resume", "warn"))
    parts.append(section("results: the chosen checkpoints", *results))
    if (folder / "teacher" / "manifest.json").exists():
        parts += _run_parts(folder / "teacher", "teacher", f"ckptkd analyze {folder / 'teacher'}")
    students = [(p.name, read_metrics(p)) for p in sorted((folder / "students").glob("*"))
                if (p / "manifest.json").exists()]
    students = [(n, m) for n, m in students if m]
    if students:
        from .plots import integer_ticks, plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, metrics in students:
            key = "val_acc" if any(is_number(m.get("val_acc")) for m in metrics) else "test_acc"  # older runs: test
            line, = ax.plot([m["epoch"] for m in metrics], [number_or_nan(m, key, 100) for m in metrics], "o-", ms=3,
                            label=f"{name} ({key.split('_')[0]})")
            if key == "val_acc" and is_number(metrics[-1].get("test_acc")):
                ax.plot([metrics[-1]["epoch"]], [100 * metrics[-1]["test_acc"]], "*", ms=10, color=line.get_color())
        ax.set_xlabel("epoch")
        integer_ticks(ax.xaxis)
        ax.set_ylabel("student accuracy [%] (star: test, at the end)")
        ax.set_title("students")
        ax.legend(fontsize=8)
        fig.tight_layout()
        parts.append(section("students", figure(fig, "validation accuracy of each student against epoch, and its "
                                                          "test accuracy at the end (star)"),
                             table([{"student": n, **m[-1]} for n, m in students],
                                   [("student", lambda r: r["student"]), ("epochs", lambda r: r["epoch"]),
                                    ("val acc %", lambda r: pct(r.get("val_acc"))),
                                    ("test acc %", lambda r: pct(r.get("test_acc"))),
                                    ("test loss", lambda r: fixed(r.get("test_loss"), 4))],
                                   caption="last epoch")))
    parts.append(section("configuration (pipeline.json)", tag("pre", esc(json.dumps(cfg, indent=2)))))
    subtitle = f"ckptkd run: {teacher.get('model')} → {student.get('model')} on {(cfg.get('data') or {}).get('spec')}"
    return page(f"ckptkd report: {folder.name or folder}", subtitle, parts)


# ---------------------------------------------------------------- a study


def _student(r: dict) -> str:
    from .study import fmt

    return fmt(r["student_mean"], r["student_std"])


def _cell(key: str) -> Callable[[dict], str]:
    from .study import _cell as study_cell  # the same number formats as tables.md

    return lambda r: study_cell(r, key)


def _study_tables() -> dict:
    """Title and columns of each study table; the columns are tables.md's (ckptkd.report.study)."""
    from .study import SELECTION_COLUMNS

    def cols(pairs):
        return [(h + (" %" if k in ("teacher_acc", "ensemble_acc", "teacher_train_acc", "teacher_val_acc") else ""),
                 _student if k == "student" else _cell(k)) for h, k in pairs]

    return {
        "intermediate": ("Full teacher vs intermediate teacher (the paper's Table 1)", cols(
            [("teacher", "teacher"), ("epoch", "epoch"), ("teacher acc", "teacher_acc"), ("student acc", "student"),
             ("Δ vs full teacher's student", "delta_vs_full")])),
        "ensembles": ("Full ensemble vs snapshot ensembles (the paper's Table 2) and trajectory averages", cols(
            [("teacher", "ensemble"), ("epochs", "epochs"), ("ensemble acc", "ensemble_acc"),
             ("student acc", "student")])),
        "selection": ("Selection: which checkpoint each policy picks (regret = best checkpoint's student "
                      "− the pick's; cost in full distillations)", cols(SELECTION_COLUMNS)),
        "terms": ("Information terms and the test-accuracy oracle, as rules (for reading; no policy reads the "
                  "test split)", cols([("rule", "rule"), ("epoch", "epoch"), ("student acc", "student"),
                                       ("regret", "regret"), ("Spearman ρ (score vs student)", "spearman")])),
        "checkpoints": ("Every checkpoint of the trajectory", cols(
            [("epoch", "epoch"), ("teacher train acc", "teacher_train_acc"), ("teacher val acc", "teacher_val_acc"),
             ("teacher test acc", "teacher_acc"), ("I(X;F)", "ixf"), ("I(Y;F)", "iyf"), ("score", "score"),
             ("student acc", "student")])),
    }


def render_study(folder: Path) -> str:
    results = _json(folder / "results.json")
    if not isinstance(results, dict):
        raise CkptkdError(f"study {str(folder)!r} has no readable results.json yet; run (or finish) it with "
                          f"ckptkd study CONFIG --out {folder}")
    try:
        return _study_page(results)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        raise CkptkdError(f"{str(folder / 'results.json')!r} does not hold a finished study "
                          f"({type(e).__name__}: {e}); run ckptkd study again to complete it") from None


def _study_page(results: dict) -> str:
    from ..config import SelectConfig
    from .study import (checkpoint_rows, describe, method_label, plot_study, table_ensembles, table_intermediate,
                        table_selection, table_terms, verdict_line, verdicts)

    cfg = results["config"]
    tables = {"intermediate": table_intermediate(results), "ensembles": table_ensembles(results),
              "selection": [r for r in table_selection(results) if "error" not in r], "terms": table_terms(results),
              "checkpoints": checkpoint_rows(results)}
    subtitle = (f"study {cfg['name']}: {describe(cfg).replace('`', '')}; {len(cfg['student_seeds'])} student seeds, "
                "test accuracies in %, mean ± std")

    def verdict(v: dict) -> str:
        ok = v["measured"] and v["within_noise_of_best"] and v["not_worse_than_last"]
        return tag("p", tag("span", esc(verdict_line(v)), class_="verdict-ok" if ok else "verdict-bad"))

    default = SelectConfig().policy
    mi = "" if default == "mi" else verdict(verdicts(results, "mi"))  # Algorithm 1 is always reported
    parts = [section("verdicts", verdict(verdicts(results)) + mi)]
    with tempfile.TemporaryDirectory() as tmp:  # the study's own plots, drawn once more, embedded
        paths = plot_study(results, Path(tmp))
        plots = "".join(png(p.read_bytes(), caption) for p, caption in zip(paths, [
            "student accuracy against the epoch of its teacher checkpoint (teacher accuracy dotted)",
            "information plane of the trajectory, coloured by the accuracy of the student it taught"]))
    est = cfg["info"]["estimator"]
    rows = results["analysis"].get(est) or []
    extra = analysis_figures(rows) if rows and all("score" in r for r in rows) else ""
    parts.append(section("plots", plots, extra))
    for key, (title, columns) in _study_tables().items():
        mark = (lambda r: r["policy"] == default) if key == "selection" else None
        parts.append(section(f"{title}; students: {method_label(cfg)}", table(tables[key], columns, mark=mark)))
    parts.append(section("configuration (results.json)", tag("pre", esc(json.dumps(cfg, indent=2)))))
    return page(f"ckptkd report: study {cfg['name']}", subtitle, parts)


# ---------------------------------------------------------------- entry point


def render_report(folder: str | Path) -> str:
    folder = Path(folder)
    if not folder.exists():
        raise CkptkdError(f"{str(folder)!r} does not exist; give a run, ckptkd run output or study folder")
    if not folder.is_dir():
        raise CkptkdError(f"{str(folder)!r} is a file; give a run, ckptkd run output or study folder")
    kind = kind_of(folder)
    if kind == "study":
        return render_study(folder)
    if kind == "pipeline":
        return render_pipeline(folder)
    return render_run(folder)


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of ``folder`` into ``out`` (default ``folder/report.html``); return its path."""
    text = render_report(folder)
    out = Path(out) if out is not None else Path(folder) / "report.html"
    if out.is_dir():
        out = out / "report.html"
    atomic_write(out, text.encode("utf-8"))
    return out
