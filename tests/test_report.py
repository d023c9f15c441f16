"""``ckptkd report``: one self-contained HTML file, checked as text and as a page rendered by Chromium.

The Chromium tests skip when no ``chromium`` is installed, except under CI (``CI`` set),
where a missing browser is a failure: ``.ci/run`` installs it.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from ckptkd import InfoConfig, analyze
from ckptkd.cli import main
from ckptkd.config import DataConfig, StageConfig, StudyConfig, to_dict
from ckptkd.report.html import render_report, write_report


# ---------------------------------------------------------------- reading the HTML


class Page(HTMLParser):
    """The tags, image sources and visible text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, name, attrs):
        self.tags.append((name, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, name: str) -> list[dict]:
        return [a for n, a in self.tags if n == name]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def _check_self_contained(text: str) -> Page:
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    assert not re.search(r"\son\w+\s*=", text), "event-handler attributes are scripts"
    assert "http://" not in text and "https://" not in text and "url(" not in text, "an external resource"
    for img in page.all("img"):
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 150
    csp = [m for m in page.all("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    return page


# ---------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, trained_run, digits):
    """The tiny digits run (mlp_xs, 3 epochs, a checkpoint each) with its analysis.json."""
    path = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run.path, path)
    from ckptkd import Run

    run = Run(path)
    analyze(run.checkpoints(), digits, InfoConfig(probe_size=300), folder=path, progress=False)
    assert (path / "analysis.json").exists()
    return path


def test_ckptkd_report_writes_one_self_contained_file(analysed_run, capsys):
    before = sorted(p.name for p in analysed_run.iterdir())
    assert main(["report", str(analysed_run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {analysed_run / 'report.html'}"
    assert sorted(p.name for p in analysed_run.iterdir()) == sorted(before + ["report.html"])
    page = _check_self_contained((analysed_run / "report.html").read_text())
    assert len(page.all("img")) == 3  # training curves, information plane, score and teacher accuracy
    assert len(page.all("table")) == 1
    words = page.words
    for expected in ("mlp_xs: training", "information plane", "Algorithm 1 picks epoch", "kde",
                     "checkpoints of mlp_xs", "digits"):
        assert expected in words, expected
    assert len(page.all("tr")) == 1 + 3  # a header and one row per checkpoint


def test_without_an_analysis_the_report_says_how_to_make_one(trained_run, tmp_path):
    out = write_report(trained_run.path, tmp_path / "r.html")
    page = _check_self_contained(out.read_text())
    assert f"No analysis.json in {trained_run.path}" in page.words
    assert f"ckptkd analyze {trained_run.path}" in page.words
    assert len(page.all("img")) == 1  # the training curves only
    assert not (trained_run.path / "report.html").exists()


def test_text_from_the_folder_is_escaped(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["created"] = "<script>alert(1)</script>"
    (run / "manifest.json").write_text(json.dumps(manifest))
    text = render_report(run)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_line_cut_short_in_metrics_jsonl_is_skipped(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')
    assert "epochs logged 3" in Page(render_report(run)).words


@pytest.mark.parametrize("setup, message", [
    (lambda t: None, "does not exist"),
    (lambda t: (t / "x").write_text("hi"), "is a file"),
    (lambda t: (t / "x").mkdir(), "is not a ckptkd run, ckptkd run output or study folder"),
    (lambda t: ((t / "x").mkdir(), (t / "x" / "study.yaml").write_text("name: s\n")), "has no readable results.json"),
])
def test_a_folder_that_is_no_run_is_answered_in_one_line(tmp_path, setup, message, capsys, monkeypatch):
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckptkd: error: ") and message in err and len(err.splitlines()) == 1, err


# ---------------------------------------------------------------- a ckptkd run output


def test_a_ckptkd_run_output_shows_the_results_table_and_the_students(tmp_path, trained_run):
    out = tmp_path / "job"
    shutil.copytree(trained_run.path, out / "teacher")
    for name in ("nokd", "full"):
        shutil.copytree(trained_run.path, out / "students" / name)
    rows = [{"role": "no KD", "teacher": "-", "teacher_acc": None, "student_acc": 0.61},
            {"role": "full teacher", "teacher": "epoch 3", "teacher_acc": 0.83, "student_acc": 0.66},
            {"role": "chosen (mi)", "teacher": "epoch 2", "teacher_acc": 0.80, "student_acc": 0.68}]
    config = {"teacher": {"model": "mlp_xs", "epochs": 3, "save_every": 1}, "student": {"model": "mlp_xs", "epochs": 3},
              "data": {"spec": "digits"}, "select": {"policy": "mi", "k": 1}, "kd": {"temperature": 4, "alpha": 0.1},
              "seed": 0}
    (out / "pipeline.json").write_text(json.dumps({"config": config, "status": "complete", "rows": rows}))
    page = _check_self_contained(write_report(out).read_text())
    assert len(page.all("table")) == 3  # the results, the teacher's checkpoints, the students' last epochs
    words = page.words
    assert "chosen (mi) epoch 2 80.00 68.00" in words
    assert "teacher: training" in words and "No analysis.json" in words and "students" in words
    assert len(page.all("img")) == 2  # teacher curves, student curves


# ---------------------------------------------------------------- a study


def synthetic_results() -> dict:
    """results.json as ckptkd.study.runner writes it: 3 checkpoints, 2 student seeds, 2 estimators."""
    cfg = StudyConfig(name="tiny", data=DataConfig(spec="digits"),
                      teacher=StageConfig(model="mlp_s", epochs=6, save_every=2),
                      student=StageConfig(model="mlp_xs", epochs=3), teacher_seeds=[0, 1], student_seeds=[0, 1],
                      ensemble_size=2, estimators=["kde", "binning"])
    epochs = [2, 4, 6]
    teacher_acc = {2: 0.80, 4: 0.86, 6: 0.90}
    student_acc = {"nokd": 0.70, "ckpt-0002": 0.74, "ckpt-0004": 0.78, "ckpt-0006": 0.76, "ens-full": 0.79,
                   "snap-0002-0006": 0.77, "snap-0004-0006": 0.785, "avg-all": 0.78, "avg-late": 0.775}
    group_teachers = {"ckpt-0002": [2], "ckpt-0004": [4], "ckpt-0006": [6], "ens-full": [6, 6],
                      "snap-0002-0006": [2, 6], "snap-0004-0006": [4, 6], "avg-all": [2, 4, 6], "avg-late": [4, 6]}
    students = []
    for group, acc in student_acc.items():
        for seed in cfg.student_seeds:
            r = {"cell": f"student/{group}/seed{seed}", "kind": "student", "group": group.split("-")[0]
                 if group.startswith("ckpt") else group, "seed": seed, "acc": acc + 0.01 * seed, "loss": 1.0,
                 "train_acc": acc, "wall_s": 1.0}
            if group in group_teachers:
                es = group_teachers[group]
                r["teacher_epochs"] = es
                r["teacher_acc"] = teacher_acc[es[0]] if len(es) == 1 else 0.91
            students.append(r)
    analysis = {est: [{"epoch": e, "checkpoint": f"epoch_{e:04d}", "ixf": 2.0 + 0.1 * i + k, "iyf": 1.5 + 0.2 * i,
                       "saturated": False, "teacher_acc": teacher_acc[e], "score": [0.2, 1.6, 1.1][i] + k}
                      for i, e in enumerate(epochs)] for k, est in enumerate(["kde", "binning"])}
    return {"config": to_dict(cfg),
            "teachers": [{"cell": f"teacher/seed{s}", "kind": "teacher", "group": "teacher", "seed": s, "acc": 0.9}
                         for s in cfg.teacher_seeds],
            "students": students, "analysis": analysis,
            "selection": {"mi": {"scores": [0.2, 1.6, 1.1], "pick": [4], "ensemble": [4, 6], "cost_s": 0.3},
                          "last": {"scores": [2, 4, 6], "pick": [6], "ensemble": [2, 6], "cost_s": 0.0},
                          "val-nll-1se": {"scores": [-0.4, 0.0, -0.1], "pick": [4], "ensemble": [4, 6], "cost_s": 0.1}},
            "trajectory": [{"epoch": e, "train_acc": teacher_acc[e] + 0.05, "test_acc": teacher_acc[e]} for e in epochs]}


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study") / "tiny"
    root.mkdir()
    (root / "study.yaml").write_text("name: tiny\n")
    (root / "results.json").write_text(json.dumps(synthetic_results()))
    return root


def test_a_study_report_holds_all_its_tables_and_plots(study_folder):
    from ckptkd.report.study import checkpoint_rows, table_ensembles, table_intermediate, table_selection, table_terms

    results = synthetic_results()
    page = _check_self_contained(write_report(study_folder).read_text())
    assert len(page.all("table")) == 5
    n_rows = sum(len(t(results)) + 1 for t in (table_intermediate, table_ensembles, table_selection, table_terms,
                                               checkpoint_rows))
    assert len(page.all("tr")) == n_rows
    assert len(page.all("img")) == 4  # student vs epoch, plane by student, and the estimator's plane and score
    words = page.words
    for expected in ("study tiny", "Full teacher vs intermediate teacher", "snapshot, halfway + last; picked by last",
                     "snapshot, picked by mi", "trajectory average: all checkpoints", "kde: total (Algorithm 1)",
                     "binning: I(Y;F)", "within noise of the best", "Spearman", "oracle: teacher test accuracy"):
        assert expected in words, expected
    best = max(checkpoint_rows(results), key=lambda r: r["student_mean"])
    assert f"best intermediate {best['epoch']}" in words


# ---------------------------------------------------------------- rendered by Chromium


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def _browse(html_file: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           *args, html_file.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _rendered(report: Path, tmp_path: Path) -> tuple[Page, Image.Image]:
    """The DOM after the page loaded (with how many images decoded) and a 1200x2000 screenshot."""
    probe = tmp_path / "probe.html"  # a copy that counts decoded images; the report itself has no script
    text = report.read_text()
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    text = text.replace("</body>", "<script>addEventListener('load', () => { document.body.dataset.decoded = "
                                   "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; "
                                   "document.body.dataset.tables = document.querySelectorAll('table').length; });"
                                   "</script></body>")
    probe.write_text(text)
    dom = Page(_browse(probe, tmp_path, "--virtual-time-budget=5000", "--dump-dom").stdout)
    shot = tmp_path / "report.png"
    _browse(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    return dom, Image.open(shot).convert("RGB")


def _check_rendered(dom: Page, shot: Image.Image, images: int, tables: int) -> None:
    assert len(dom.all("img")) == images and len(dom.all("table")) == tables
    body = dom.all("body")[0]
    assert body.get("data-decoded") == str(images), "not every embedded plot decoded"
    assert body.get("data-tables") == str(tables)
    assert shot.size == (1200, 2000)
    colours = shot.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500, "a near-blank page"  # plots bring gradients and anti-aliased lines
    background = max(colours)[1]
    share = sum(n for n, c in colours if c != background) / (shot.width * shot.height)
    # measured: a fully rendered study report covers 9.6% of its first 2000 px (10.1% before its
    # verdicts and tables changed; white plots on a light page), a blank page 0%
    assert share > 0.05, f"only {share:.0%} of the page differs from its background"


def test_chromium_renders_the_run_report(analysed_run, tmp_path):
    report = write_report(analysed_run, tmp_path / "report.html")
    dom, shot = _rendered(report, tmp_path)
    _check_rendered(dom, shot, images=3, tables=1)
    shot.save(tmp_path / "run-report.png")


def test_chromium_renders_the_study_report(study_folder, tmp_path):
    report = write_report(study_folder, tmp_path / "report.html")
    dom, shot = _rendered(report, tmp_path)
    _check_rendered(dom, shot, images=4, tables=5)


def test_information_plane_colour_bar_shows_whole_epochs():
    import matplotlib.pyplot as plt

    from ckptkd.report.plots import information_plane

    fig, ax = plt.subplots()
    information_plane([{"epoch": e, "ixf": 5.0 - e, "iyf": 1.0 + e} for e in (1, 2, 3)], ax)
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
    plt.close(fig)
    assert ticks and all(t.isdigit() for t in ticks), ticks
