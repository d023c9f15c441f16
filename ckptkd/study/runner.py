"""``ckptkd study``: run the grid of a study, in order, skipping finished cells.

    STUDY/study.yaml               the resolved config
    STUDY/cells/<cell id>/         one run folder per cell, with result.json when finished
    STUDY/analysis/<estimator>/    the information analysis of the trajectory, per estimator
    STUDY/selection/               what the selection policies read (val metrics, proxy students, training-set
                                   outputs), cached; each policy within the study's ``budget``, each
                                   ``budget_sweep`` point (policy ``proxy@B``) within its own B
    STUDY/invocations.jsonl        when each invocation started and how it ended
    STUDY/results.json             every cell's result and every analysis row
    STUDY/tables.{md,csv,json}, *.png   the tables and plots (ckptkd.report.study)
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from .. import parallel
from ..config import SelectConfig, StudyConfig, check, checks, one_of, to_dict
from ..distill.registry import check_method, get_method
from ..errors import CkptkdError, closest
from ..info.analyze import analyze
from ..info.registry import ESTIMATORS
from ..io import atomic_write, make_folder, occupied, read_json, write_json
from ..select import POLICIES, SelectionContext, get_policy, halfway, last, policy_scores, top_k
from ..trajectory import Run
from .cells import Cell, _data, finished, run_cell
from .executors import Executor, Tracker, get_executor
from .invocations import Invocation, invocations
from .lock import NAME as LOCK, StudyLock
from .shipping import install_cell

STUDY_BUDGET_KEY = "the study's top-level budget"  # what a policy over it is told to raise


def teacher_cells(cfg: StudyConfig) -> list[Cell]:
    return [Cell(f"teacher/seed{s}", "teacher", s, "teacher") for s in cfg.teacher_seeds]


def study_policies(cfg: StudyConfig) -> list[str]:
    """The policies a study measures: ``cfg.policies``, or every registered one that scores checkpoints."""
    return list(cfg.policies) or scoring_policies()


def scoring_policies() -> list[str]:
    return [name for name, p in POLICIES.items() if not p.takes_epochs]


@checks(StudyConfig)
def _check_study(cfg: StudyConfig) -> None:
    """What a study needs of its config: seeds, a full ensemble, checkpoints enough for snapshot
    ensembles without neighbours, registered estimators and policies that score checkpoints."""
    check(len(cfg.teacher_seeds) >= 1, "study teacher_seeds needs at least one seed")
    check(len(set(cfg.teacher_seeds)) == len(cfg.teacher_seeds), "study teacher_seeds must be distinct")
    check(len(cfg.student_seeds) >= 1 and len(set(cfg.student_seeds)) == len(cfg.student_seeds),
          "study student_seeds must be one or more distinct seeds")
    check(2 <= cfg.ensemble_size <= len(cfg.teacher_seeds),
          f"study ensemble_size must be between 2 and the number of teacher_seeds ({len(cfg.teacher_seeds)}), "
          f"got {cfg.ensemble_size}; add teacher seeds for a bigger full ensemble")
    for e in cfg.estimators:
        one_of("study estimators", e, tuple(ESTIMATORS))
    scoring = scoring_policies()
    for name in cfg.policies + cfg.snapshot_policies:
        check(name in scoring, f"study policies must be policies that score checkpoints ({', '.join(scoring)}), "
                               f"got {name!r}{closest(name, scoring)}")
    check(cfg.teacher.save_every > 0, "study teacher.save_every must be positive: the study needs checkpoints")
    saves = cfg.teacher.epochs // cfg.teacher.save_every
    check(saves >= 2 * cfg.ensemble_size - 1,
          f"study teacher saves {saves} checkpoints, too few for a snapshot ensemble of {cfg.ensemble_size} "
          f"without neighbours (needs {2 * cfg.ensemble_size - 1}); lower teacher.save_every")


def selection_context(cfg: StudyConfig, root: Path, device="cpu", *, proxy=None, budget=None) -> SelectionContext:
    """What a study's policies read, cached in STUDY/selection/ (scripts/nll_margins.py reads it too).

    One selection serves every student seed of the study, so its proxy students start from
    seed 0 (+ ``proxy.seed``), as they always have: the cached proxy records stay valid. Each
    policy, and the verdict, may spend the study's ``budget``; ``proxy`` and ``budget`` replace
    the study's for one ``budget_sweep`` point."""
    select = SelectConfig(proxy=proxy or cfg.proxy, budget=cfg.budget if budget is None else budget)
    return SelectionContext.from_config(_data(cfg.data), root / "selection", select=select, info=cfg.info,
                                        student=cfg.student, kd=cfg.kd, seed=0, device=device,
                                        budget_key=STUDY_BUDGET_KEY)


def selection(cfg: StudyConfig, root: Path, trajectory: list, device: str) -> dict[str, dict]:
    """Every policy's scores on the trajectory, its single pick, its snapshot ensemble of
    ``ensemble_size`` checkpoints (never two neighbours), its cost in wall seconds and in
    distillations, and its statement of confidence (``ckptkd.select.confidence``); then the
    ``proxy@B`` points of the study's ``budget_sweep`` (``sweep_records``).

    A policy that cannot run on this study (e.g. one that needs a validation split the study
    does not carve) is recorded with its error instead.
    """
    ctx = selection_context(cfg, root, device)
    (root / "selection").mkdir(exist_ok=True)
    out = {name: policy_record(name, cfg, trajectory, ctx) for name in study_policies(cfg)}
    return {**out, **sweep_records(cfg, root, trajectory, device)}


def policy_record(name: str, cfg: StudyConfig, trajectory: list, ctx: SelectionContext) -> dict:
    """One policy's record in results.json's ``selection`` (see ``selection``)."""
    from ..select.confidence import statement

    try:
        scores = policy_scores(name, trajectory, ctx)
    except CkptkdError as e:
        return {"error": str(e)}
    pick = top_k(trajectory, scores, 1)
    ensemble = top_k(trajectory, scores, cfg.ensemble_size, 2 * cfg.teacher.save_every)
    return {"scores": scores, "pick": [c.epoch for c in pick], "ensemble": [c.epoch for c in ensemble],
            "cost_s": get_policy(name).cost_s(trajectory, ctx),
            "distillations": get_policy(name).spend(trajectory, ctx).distillations,
            "confidence": statement(name, trajectory, pick, ctx)}


def sweep_name(budget: float) -> str:
    """The policy name of one budget_sweep point: ``proxy@0.5``, ``proxy@2``."""
    return f"proxy@{budget:g}"


def sweep_records(cfg: StudyConfig, root: Path, trajectory: list, device: str) -> dict[str, dict]:
    """``proxy@B`` for each B of ``cfg.budget_sweep``: policy ``proxy`` with its fractions set to
    spend at most B (``ckptkd.select.budget.proxy_for_budget``), under a budget of B, not the
    study's. Its record is a policy's, plus ``budget`` (B) and the ``proxy`` settings used; its
    proxy students are cached in STUDY/selection/ under those settings, so each B has its own."""
    from ..select.budget import proxy_for_budget

    data = _data(cfg.data)
    out = {}
    for b in cfg.budget_sweep:
        try:
            proxy = proxy_for_budget(b, len(trajectory), cfg.student.epochs, len(data.y_train), data.num_classes,
                                     cfg.proxy)
        except CkptkdError as e:  # budget 0, or too small for one sample per class
            out[sweep_name(b)] = {"error": str(e), "budget": b}
            continue
        ctx = selection_context(cfg, root, device, proxy=proxy, budget=b)
        out[sweep_name(b)] = {**policy_record("proxy", cfg, trajectory, ctx), "budget": b,
                              "proxy": {k: getattr(proxy, k) for k in ("epoch_fraction", "data_fraction")}}
    return out


def study_verdict(cfg: StudyConfig, root: Path, trajectory: list, device: str, picks: dict[str, dict]) -> dict:
    """The verdict on distilling (``ckptkd.select.verdict``) from the default policy's pick, within
    the budget that policy leaves; judged in the report against the students of no KD."""
    from ..select.verdict import recommend

    policy = SelectConfig().policy
    record = picks.get(policy) or {}
    if "pick" not in record:
        return {"policy": policy, "error": record.get("error", f"policy {policy} was not measured")}
    chosen = [c for c in trajectory if c.epoch in record["pick"]]
    ctx = selection_context(cfg, root, device)
    return {"policy": policy, **recommend(chosen, ctx, spent=record.get("distillations", 0.0), parts=[policy])}


def student_cells(cfg: StudyConfig, root: Path, picks: dict[str, dict]) -> list[Cell]:
    """Every student of the grid; needs the finished teachers and the policies' ``picks``.

    Groups: no KD; every checkpoint; the full ensemble of independent runs; the snapshot
    ensembles of ``snapshot_policies`` (and the paper's halfway + last); and two
    trajectory-average teachers, the mean probabilities of all checkpoints and of the
    later half (Filter-KD's time-averaged predictions, taken over saved checkpoints). A
    method that learns from one teacher only (``Method.single_teacher``) gets the first two.
    """
    runs = [Run(root / "cells" / c.id) for c in teacher_cells(cfg)]
    trajectory = runs[0].checkpoints()
    if len(trajectory) < 2:
        raise CkptkdError("the study's teacher trajectory has fewer than 2 checkpoints; lower teacher.save_every")
    by_epoch = {c.epoch: c for c in trajectory}
    groups: list[tuple[str, str, list, str]] = [("nokd", "nokd", [], "")]
    groups += [(f"ckpt-{c.epoch:04d}", "ckpt", [c], "") for c in trajectory]
    if get_method(cfg.kd.method).single_teacher:  # a method that refuses ensembles (fitnet) gets no ensemble cells
        return [Cell(f"student/{name}/seed{s}", "student", s, group, tuple(str(c.path) for c in ckpts), combine)
                for name, group, ckpts, combine in groups for s in cfg.student_seeds]
    groups.append(("ens-full", "ens-full", [r.checkpoints()[-1] for r in runs[: cfg.ensemble_size]], ""))
    snapshots = {tuple(p["ensemble"]) for name, p in picks.items() if "ensemble" in p and name in cfg.snapshot_policies}
    snapshots.add((halfway(trajectory).epoch, last(trajectory).epoch))
    for epochs in sorted(snapshots):
        groups.append(("snap-" + "-".join(f"{e:04d}" for e in epochs), "snapshot", [by_epoch[e] for e in epochs], ""))
    groups.append(("avg-all", "average", trajectory, "probs"))
    groups.append(("avg-late", "average", trajectory[len(trajectory) // 2:], "probs"))
    return [Cell(f"student/{name}/seed{s}", "student", s, group, tuple(str(c.path) for c in ckpts), combine)
            for name, group, ckpts, combine in groups for s in cfg.student_seeds]


def _run_all(cells: list[Cell], cfg: StudyConfig, root: Path, device: str, executor: Executor, bar,
             inv: Invocation) -> list[dict]:
    """Run the unfinished cells on ``executor`` (counted in ``inv``); return every cell's result.

    Under torchrun every rank runs each cell together (data-parallel); rank 0 decides
    which cells are finished, since it alone writes.
    """
    unfinished = set(parallel.main_only(lambda: [c.id for c in cells if not finished(c, cfg, root)]))
    todo = [c for c in cells if c.id in unfinished]
    bar.update(len(cells) - len(todo))

    def on_done(cell: Cell, shipped: dict | None) -> None:
        if shipped is not None:  # made on a worker: the driver alone writes the study folder
            install_cell(root, cell.id, shipped)
        inv.ran()

    # the runner's own run_cell, looked up now: a test that patches it sees every in-process cell
    executor.run(todo, cfg, root, device, Tracker(bar, on_done), run_cell)
    return parallel.main_only(lambda: [finished(c, cfg, root) for c in cells])


def _open_study(cfg: StudyConfig, root: Path) -> StudyLock:
    """Make the folder and take its lock (held until the run ends), then write study.yaml."""
    if occupied(root) and not (root / "study.yaml").exists() and {p.name for p in root.iterdir()} != {LOCK}:
        raise CkptkdError(f"study folder {str(root)!r} is not empty and holds no study; choose another --out")
    make_folder(root)
    lock = StudyLock(root).__enter__()
    try:
        atomic_write(root / "study.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    return lock


def analyses(cfg: StudyConfig, root: Path, device: str) -> dict[str, list[dict]]:
    """Algorithm 1's rows of the trajectory, for each estimator of the study."""
    trajectory = Run(root / "cells" / teacher_cells(cfg)[0].id).checkpoints()
    data = _data(cfg.data)
    out = {}
    for est in dict.fromkeys([cfg.info.estimator, *cfg.estimators]):
        folder = root / "analysis" / est
        folder.mkdir(parents=True, exist_ok=True)
        out[est] = analyze(trajectory, data, replace(cfg.info, estimator=est), folder=folder, device=device,
                           progress=False)
    return out


def run_study(cfg: StudyConfig, root: str | Path, *, jobs: int = 1, device: str = "cpu",
              progress: bool = True, threads: int = 1, executor: Executor | None = None) -> dict:
    """Run (or continue) the study in ``root``; returns the collected results.

    Each cell runs on ``threads`` torch threads (``jobs`` cells at a time): the small models
    of CPU studies run best on one thread each, and oversubscribed threads slow to a crawl.
    ``executor`` (default: the local one with ``jobs``) is what runs the cells; one given
    here stays open when the study ends (``Executor.close`` is the caller's).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    own = executor is None
    executor = executor or get_executor("local", jobs=jobs)
    try:
        return _run_study(cfg, Path(root), executor, device, progress, threads)
    finally:
        torch.set_num_threads(previous_threads)
        if own:
            executor.close()


def _run_study(cfg: StudyConfig, root: Path, executor: Executor, device: str, progress: bool, threads: int) -> dict:
    check_method(cfg.kd)  # an unknown method or bad parameters fail before the study folder is touched
    w = parallel.world()
    jobs = executor.jobs
    if w.distributed and (jobs > 1 or executor.name != "local"):
        raise CkptkdError(f"--jobs {jobs} cannot be combined with torchrun: under torchrun the ranks share each "
                          "cell; use --jobs 1, or run without torchrun" if jobs > 1 else
                          f"--executor {executor.name} cannot be combined with torchrun; run it without torchrun")
    executor.start(cfg)  # connect and check the cells fit, before the study folder is touched
    lock = parallel.main_first(lambda: _open_study(cfg, root), then=lambda: None)
    teachers = teacher_cells(cfg)
    with lock or nullcontext(), Invocation(root, jobs, threads, enabled=w.is_main, executor=executor.describe()) \
            as inv, tqdm(total=len(teachers), desc=f"study {cfg.name}", unit="cell",
                         disable=not (progress and w.is_main), dynamic_ncols=True) as bar:
        teacher_results = _run_all(teachers, cfg, root, device, executor, bar, inv)
        rows = parallel.main_only(lambda: analyses(cfg, root, device))
        trajectory = Run(root / "cells" / teachers[0].id).checkpoints()
        picks = parallel.main_only(lambda: selection(cfg, root, trajectory, device))
        verdict = parallel.main_only(lambda: study_verdict(cfg, root, trajectory, device, picks))
        students = student_cells(cfg, root, picks)
        bar.total = len(teachers) + len(students)
        bar.refresh()
        student_results = _run_all(students, cfg, root, device, executor, bar, inv)

    def collect() -> dict:
        # the test split reports; only the checkpoints' students (already run) read it
        tested = {r["teacher_epochs"][0]: r["teacher_acc"] for r in student_results if r["group"] == "ckpt"}
        results = {"config": to_dict(cfg), "teachers": teacher_results, "students": student_results,
                   "invocations": invocations(root),
                   "compute_s": sum(r["wall_s"] for r in teacher_results + student_results),
                   "analysis": rows, "selection": picks, "recommendation": verdict,
                   "trajectory": [{"epoch": c.epoch, **{k: c.meta.get(k) for k in ("train_acc", "val_acc")},
                                   "test_acc": tested.get(c.epoch)} for c in trajectory]}
        write_json(root / "results.json", results)
        return results

    return parallel.main_only(collect)


def load_results(root: str | Path) -> dict:
    return read_json(Path(root) / "results.json")
