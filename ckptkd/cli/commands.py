"""One function per subcommand: read the config, call the API, print the result."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..config import (DataConfig, DistillConfig, InfoConfig, KDConfig, RunConfig, TrainConfig, from_dict, load_config,
                      read_yaml, to_dict)
from ..data import load_dataset
from ..errors import CkptkdError
from ..models import create_model
from . import flags


def _progress(args) -> bool:
    from .. import parallel

    return not args.quiet and parallel.world().is_main


def _say(text: str) -> None:
    """Print once per job: under torchrun, rank 0 speaks for every rank."""
    from .. import parallel

    if parallel.world().is_main:
        print(text)


def run(args, overrides):
    from .. import parallel
    from ..pipeline import compression_line, format_table, run_pipeline, verdict_lines

    flags.check_out_flags(args)
    cfg = load_config(RunConfig, args.config_file or args.config, overrides)
    # before the output folder exists; a selection picks at least this many checkpoints (a union may pick more)
    fewest = max(len(cfg.select.checkpoints) if p == "explicit" else cfg.select.k for p in cfg.select.policy.split("+"))
    flags.check_method_flags(cfg, teachers=fewest, overrides=overrides)
    flags.check_data_flags(overrides, cfg.data)
    flags.check_run_flags(overrides, cfg)
    rows = run_pipeline(cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=_progress(args), say=_say)
    from ..distill import describe_method

    _say(f"ckptkd run: {cfg.teacher.model} -> {cfg.student.model} on {cfg.data.spec}, seed {cfg.seed}, "
         f"distilled with {describe_method(cfg.kd)}  ({args.out})")
    _say(format_table(rows))
    parallel.on_main(lambda: print("\n".join(verdict_lines(args.out) + [compression_line(args.out)])))


def train(args, overrides):
    from ..train import resolve_device, train as train_model

    flags.check_out_flags(args)
    cfg = load_config(TrainConfig, args.config, overrides)
    flags.check_data_flags(overrides, cfg.data)
    flags.check_stage_flags(overrides, "train", cfg.train)
    data = load_dataset(cfg.data)
    create_model(cfg.train.model, data.num_classes, data.in_shape)  # a bad model spec fails before --out exists
    device = resolve_device(cfg.device)  # so does a device this machine lacks
    _say(data.augment_line)
    run_, complete = _create_run(args, to_dict(cfg), model=cfg.train.model, num_classes=data.num_classes,
                                 in_shape=data.in_shape, data_fingerprint=data.fingerprint)
    if complete:
        _say(f"{args.out}: already complete ({len(run_.checkpoints())} checkpoints)")
        return
    with _noting_unreadable_images(run_):
        _, rec = train_model(data, cfg.train, seed=cfg.seed, device=device, run=run_,
                             progress=_progress(args), desc=cfg.train.model, resume=args.resume)
    _say(f"{args.out}: {len(run_.checkpoints())} checkpoints, test acc {100 * rec['test_acc']:.2f}%")


def distill(args, overrides):
    from .. import parallel
    from ..distill import check_method, describe_method, distill as distill_model
    from ..teacher import Teacher
    from ..train import resolve_device
    from ..trajectory import open_checkpoint

    overrides |= {"teachers": args.teachers} | ({"teacher_model": args.teacher_model} if args.teacher_model else {})
    flags.check_out_flags(args)
    cfg = load_config(DistillConfig, args.config, overrides)
    flags.check_method_flags(cfg, teachers=len(cfg.teachers), overrides=overrides, models=False)  # before anything else
    flags.check_data_flags(overrides, cfg.data)
    flags.check_stage_flags(overrides, "student", cfg.student)
    flags.check_teacher_flags(overrides, cfg.teachers)
    data = load_dataset(cfg.data)
    ckpts = [open_checkpoint(t, cfg.teacher_model) for t in cfg.teachers]
    teacher = Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, cfg.kd.combine,
                                       fingerprint=data.fingerprint)
    student = create_model(cfg.student.model, data.num_classes, data.in_shape)  # a bad spec fails before --out exists
    members = {c.model or str(c.path): m for c, m in zip(ckpts, teacher.members)}
    check_method(cfg.kd).check_models(members, {cfg.student.model: student}, data.in_shape)  # fitnet: feature API
    device = resolve_device(cfg.device)  # so does a device this machine lacks
    _say(data.augment_line)
    run_, complete = _create_run(args, to_dict(cfg), model=cfg.student.model, num_classes=data.num_classes,
                                 in_shape=data.in_shape, data_fingerprint=data.fingerprint, kind="distill")
    if complete:
        _say(f"{args.out}: already complete")
        return
    parallel.on_main(lambda: run_.note(teachers=[  # so that ckptkd export finds them from any folder
        {"path": str(c.path.resolve()), "sha256": c.sha256, "model": c.model} for c in ckpts]))
    with _noting_unreadable_images(run_):
        _, rec = distill_model(data, cfg.student, teacher, cfg.kd, seed=cfg.seed, device=device,
                               run=run_, progress=_progress(args), cache_dir=args.cache_dir, resume=args.resume)
    _say(f"{args.out}: student test acc {100 * rec['test_acc']:.2f}% ({describe_method(cfg.kd)})")


def _create_run(args, config: dict, **make):
    """(run, complete): ``Run.create`` for --out. Under torchrun rank 0 creates the folder and
    the others then open it (to resume from its state; only rank 0 writes), and every rank
    raises rank 0's error."""
    from .. import parallel
    from ..trajectory import Run

    run_ = parallel.main_first(
        lambda: Run.create(args.out, config, overwrite=args.overwrite, resume=args.resume, **make),
        then=lambda: Run(args.out))
    return run_, run_.complete


@contextlib.contextmanager
def _noting_unreadable_images(run_):
    """A streamed image found unreadable mid-run stops the command (one line, exit 2); the run
    records it, so that --resume after the file is fixed or removed accepts the data as it is then
    (a new fingerprint: ``Run.create``)."""
    from .. import parallel
    from ..data.stream import UnreadableImage

    try:
        yield
    except UnreadableImage as e:
        parallel.on_main(lambda: run_.note(stopped_on_data=str(e)))
        raise


def eval(args, overrides):  # noqa: A001 - the subcommand's name
    from ..teacher import Teacher
    from ..train import evaluate, resolve_device
    from ..trajectory import load_model, open_checkpoint

    combine = from_dict(KDConfig, {"combine": args.combine or "logits"}, "kd").combine  # a bad rule first
    if args.combine is not None and not args.ensemble:
        raise CkptkdError("--combine has no effect here: it is the rule of --ensemble, which was not given; "
                          "drop it, or add --ensemble")
    data = load_dataset(_data_config(args, overrides))
    device = resolve_device(overrides.get("device", "auto"))
    ckpts = [open_checkpoint(c, args.model) for c in args.checkpoints]
    results = []
    for c in ckpts:
        m = load_model(c, data.num_classes, data.in_shape, data.fingerprint).to(device)
        results.append({"checkpoint": str(c.path), **evaluate(m, data.x_test, data.y_test, device=device)})
    if args.ensemble:
        t = Teacher.from_checkpoints(ckpts, data.num_classes, data.in_shape, combine,
                                     fingerprint=data.fingerprint).to(device)
        results.append({"checkpoint": f"ensemble ({combine})", **evaluate(t, data.x_test, data.y_test, device=device)})
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{100 * r['acc']:6.2f}%  loss {r['loss']:.4f}  {r['checkpoint']}")


def _data_config(args, overrides) -> DataConfig:
    """The data of a run folder's config, else --data / --config."""
    run = getattr(args, "run", None)  # eval has no run folder: never read the current directory's
    run_dir = Path(run) if run else None
    data = {}
    if args.config:
        data = load_yaml_section(args.config, "data")
    elif run_dir is not None and (run_dir / "config.yaml").exists():
        from ..trajectory import Run

        data = Run(run_dir).config.get("data", {}) if (run_dir / "manifest.json").exists() else {}
    data = {**data, **{k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("data.")}}
    cfg = from_dict(DataConfig, data, "data")
    flags.check_data_flags(overrides, cfg)
    return cfg


def load_yaml_section(path, section: str) -> dict:
    return read_yaml(path).get(section) or {}


def _analysis(args, overrides, ckpts=None):
    from ..info.analyze import analyze
    from ..train import resolve_device
    from ..trajectory import open_trajectory

    info = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("info.")}
    cfg = from_dict(InfoConfig, (load_yaml_section(args.config, "info") if args.config else {}) | info, "info")
    flags.check_info_flags(overrides, cfg)
    data = load_dataset(_data_config(args, overrides))
    ckpts = ckpts or open_trajectory(args.run, args.model)
    device = resolve_device(overrides.get("device", "auto"))
    rows = analyze(ckpts, data, cfg, folder=args.run, device=device, progress=_progress(args))
    return cfg, ckpts, rows


def analyze(args, overrides):
    from ..report.plots import plot_analysis

    cfg, _, rows = _analysis(args, overrides)
    plots = plot_analysis(rows, Path(args.run))
    if args.json:
        print(json.dumps({"settings": to_dict(cfg), "rows": rows, "plots": [str(p) for p in plots]}, indent=2))
        return
    print(format_analysis(rows, cfg))
    if any(r["saturated"] for r in rows):
        print("warning: some estimates are within 5% of log N (saturated); raise info.kde.noise_fraction "
              "(in --config) or the probe size")
    print(f"wrote {args.run}/analysis.json, analysis.csv, " + ", ".join(p.name for p in plots))


def format_analysis(rows: list[dict], cfg: InfoConfig) -> str:
    head = f"{'epoch':>6} {'I(X;F)':>8} {'I(Y;F)':>8} {'~I(X;F)':>8} {'~I(Y;F)':>8} {'score':>7} {'val acc':>7}"
    lines = [f"estimator {cfg.estimator} on {cfg.features}, nats; ~ = {cfg.scaling} scaled", head, "-" * len(head)]
    best = max(range(len(rows)), key=lambda i: rows[i]["score"])
    for i, r in enumerate(rows):
        sx, sy = (r["ixf_minmax"], r["iyf_minmax"]) if cfg.scaling == "minmax" else (r["ixf_norm"], r["iyf_norm"])
        acc = "-" if r["teacher_acc"] is None else f"{100 * r['teacher_acc']:.2f}"
        mark = "  <- best" if i == best else ""
        lines.append(f"{r['epoch']:>6} {r['ixf']:>8.4f} {r['iyf']:>8.4f} {sx:>8.3f} {sy:>8.3f} {r['score']:>7.3f} "
                     f"{acc:>7}{mark}")
    return "\n".join(lines)


def select(args, overrides):
    from ..select import check_k, choose, get_policy, parse_policy, policy_scores
    from ..select.budget import DEFAULT_BUDGET, check_budget
    from ..select.confidence import statement
    from ..select.verdict import pairs_to_train, recommend
    from ..trajectory import open_trajectory

    if args.k < 1 or args.min_spacing < 0:
        raise CkptkdError(f"-k must be at least 1 and --min-spacing at least 0, got -k {args.k} "
                          f"--min-spacing {args.min_spacing}")
    epochs = args.checkpoints or []
    parts = parse_policy(args.policy, k=args.k, epochs=epochs)
    flags.check_select_flags(args, overrides, parts)
    ckpts = open_trajectory(args.run, args.model)
    if any(p != "explicit" for p in parts):
        check_k(ckpts, args.k, args.min_spacing)  # before any scores, which are the slow part
    ctx = None  # policies of the epochs alone: no data is loaded
    if flags.check_input_flags(args, overrides, parts):
        ctx = _selection_context(args, overrides)
        flags.check_info_flags(overrides, ctx.info, args.policy)
    spend = check_budget(parts, ckpts, ctx)  # before anything is spent
    flags.check_proxy_flags(args, overrides, parts, pairs_to_train(ckpts, ctx, spend.distillations)[1])
    scored = [p for p in parts if p != "explicit"]
    scores = {p: policy_scores(p, ckpts, ctx) for p in scored}
    costs = {p: get_policy(p).cost_s(ckpts, ctx) for p in scored}
    picked = choose(args.policy, ckpts, ctx, k=args.k, min_spacing=args.min_spacing, epochs=epochs, scores=scores)
    rankings = {p: sorted(({"epoch": c.epoch, "score": s} for c, s in zip(ckpts, scores[p])),
                          key=lambda r: (-r["score"], -r["epoch"])) for p in scored}
    own = {p: choose(p, ckpts, ctx, k=args.k, min_spacing=args.min_spacing, scores=scores[p]) for p in scored}
    confidence = {p: statement(p, ckpts, own[p], ctx) for p in scored}
    spends = {p: get_policy(p).spend(ckpts, ctx).distillations for p in scored}
    verdict = recommend(picked, ctx, spent=spend.distillations, parts=parts)
    overall = (confidence[scored[0]] if len(scored) == 1 else
               {"statement": "; ".join(f"{p}: {confidence[p]['statement']}" for p in scored),
                "picks": [r for p in scored for r in confidence[p]["picks"]]} if scored else None)
    if args.json:
        print(json.dumps({"policy": args.policy, "k": args.k, "min_spacing": args.min_spacing,
                          "chosen": [{"epoch": c.epoch, "path": str(c.path)} for c in picked],
                          "ranking": rankings[scored[0]] if len(scored) == 1 else [],
                          "parts": [{"policy": p, "cost_s": costs[p], "distillations": spends[p],
                                     "ranking": rankings[p], "confidence": confidence[p]} for p in scored],
                          "cost_s": sum(costs.values()), "budget": ctx.budget if ctx is not None else None,
                          "distillations": spend.distillations + verdict["spent"],
                          "confidence": overall, "recommendation": verdict}, indent=2))
        return
    for p in scored:
        print(f"policy {p} (inputs took {costs[p]:.1f} s, {spends[p]:.2f} distillations)")
        print("rank  epoch      score")
        for i, r in enumerate(rankings[p], 1):
            print(f"{i:>4} {r['epoch']:>6} {r['score']:>10.4f}")
    print(f"chosen ({args.policy}, k={args.k}): " + ", ".join(f"epoch {c.epoch} ({c.path})" for c in picked))
    if overall is not None:
        print(f"confidence: {overall['statement']}")
    print(f"verdict: {verdict['reason']}")
    budget = ctx.budget if ctx is not None else DEFAULT_BUDGET  # no context: a policy of the epochs alone
    print(f"spent {spend.distillations + verdict['spent']:.2f} of a budget of {budget:.2f} distillations")


def _selection_context(args, overrides):
    """What ``ckptkd select`` reads: the run's data (with its validation split), --config's
    info, student, kd and select.proxy sections (the run folder's config for what it lacks),
    and the flags on top."""
    from ..config import KDConfig, ProxyConfig, SelectConfig, StageConfig
    from ..select import SelectionContext
    from ..select.budget import DEFAULT_BUDGET, check_budget_value
    from ..train import resolve_device

    yaml_cfg = read_yaml(args.config) if args.config else {}
    run_cfg = {}
    if (Path(args.run) / "manifest.json").exists() and (Path(args.run) / "config.yaml").exists():
        from ..trajectory import Run

        run_cfg = Run(args.run).config or {}

    def section(name: str, cls):
        base = yaml_cfg.get(name) or run_cfg.get(name) or {}
        flags = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(f"{name}.")}
        return from_dict(cls, {**base, **flags}, name) if base or flags else None

    chosen = yaml_cfg.get("select") or run_cfg.get("select") or {}
    proxy = (chosen.get("proxy") if isinstance(chosen, dict) else chosen) or {}
    data = load_dataset(_data_config(args, overrides))
    device = resolve_device(overrides.get("device", "auto"))
    seed = overrides.get("seed", run_cfg.get("seed", 0))
    budget = overrides.get("select.budget", chosen.get("budget", DEFAULT_BUDGET) if isinstance(chosen, dict)
                           else DEFAULT_BUDGET)
    # the policy comes from the flags; the budget from --budget, else --config's or the run's select.budget
    select = SelectConfig(proxy=from_dict(ProxyConfig, proxy, "select.proxy"),
                          budget=check_budget_value(budget, "select.budget"))
    return SelectionContext.from_config(data, args.run, select=select, info=section("info", InfoConfig),
                                        student=section("student", StageConfig), kd=section("kd", KDConfig),
                                        seed=seed, device=device, progress=_progress(args))


def policies(args, overrides):
    from ..config import SelectConfig
    from ..select import POLICIES

    width = max(len(n) for n in POLICIES)
    for name, p in POLICIES.items():
        needs = f"  [needs {', '.join(p.needs)}]" if p.needs else ""
        default = "  (default)" if name == SelectConfig().policy else ""
        print(f"{name:<{width}}  {p.summary}{needs}{default}")


def methods(args, overrides):
    from ..config import KDConfig
    from ..distill import METHODS

    width = max(len(n) for n in METHODS)
    for name, m in METHODS.items():
        default = "  (default)" if name == KDConfig().method else ""
        print(f"{name:<{width}}  {m.summary}{default}")


def study(args, overrides):
    from .. import parallel
    from ..config import StudyConfig
    from ..report.study import plot_study, render_markdown, write_tables
    from ..study import run_study
    from ..train import resolve_device

    cfg = load_config(StudyConfig, args.config_file, overrides)
    flags.check_method_flags(cfg)  # before the study folder exists
    out = Path(args.out or Path("runs") / "studies" / cfg.name)
    for flag, value in (("--jobs", args.jobs), ("--threads", args.threads)):
        if value < 1:
            raise CkptkdError(f"{flag} must be at least 1, got {value}")
    from ..study.executors import get_executor

    executor = get_executor(args.executor, jobs=args.jobs, address=args.address)
    for flag, key in (("--num-cpus", "resources.num_cpus"), ("--num-gpus", "resources.num_gpus")):
        if key in overrides and args.executor == "local":
            raise CkptkdError(f"{flag} sizes a cell on a Ray cluster; add --executor ray, or use --jobs locally")
    device = str(resolve_device(cfg.device))
    from ..study.cells import _data  # loaded once per process: the study's analyses reuse it

    _say(_data(cfg.data).augment_line)
    try:
        results = run_study(cfg, out, device=device, progress=_progress(args), threads=args.threads,
                            executor=executor)
    finally:
        executor.close()
    if parallel.world().is_main:
        write_tables(results, out)
        plot_study(results, out)
    _say(render_markdown(results))
    _say(f"wrote {out}/tables.md, tables.json, table_*.csv, student_vs_epoch.png, information_plane.png")


def report(args, overrides):
    from ..report.html import write_report

    path = write_report(args.folder, args.out)
    print(f"wrote {path}")


def export(args, overrides):
    from ..export import export as export_student, format_report

    report_ = export_student(args.checkpoint, args.format, args.out, model=args.model, data=overrides.get("data.spec"),
                             teachers=args.teachers, teacher_model=args.teacher_model, overwrite=args.overwrite)
    print(format_report(report_, args.checkpoint))


def models(args, overrides):
    from ..models import list_models

    print("\n".join(list_models()))
