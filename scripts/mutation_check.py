"""Does the suite notice when the core breaks? Apply deliberate breaks, one at a time, to a
temporary copy of the repository and run the tests that should catch each.

    python scripts/mutation_check.py                 # every mutation
    python scripts/mutation_check.py kd-uniform-target score-negated   # some of them
    python scripts/mutation_check.py --list

A mutation is a file, an exact piece of its text and what replaces it. The text must occur
exactly once, so a mutation whose code has moved fails loudly instead of testing nothing:
update its ``old`` here. Not part of CI (it runs the listed test files once per mutation).
Prints name -> caught / MISSED / error and the count caught.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    why: str  # what the break means for a user
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, or file::test, or -k expressions


NO_FINISH = "tests/test_distributed.py::test_a_torchrun_script_that_never_calls_finish_ends_cleanly_with_its_status"

MUTATIONS = [
    Mutation("kd-uniform-target", "distillation ignores the teacher (uniform KD target)",
             "ckptkd/distill/kd.py", "        target = self.teacher_log_probs(x, idx, epoch)\n",
             "        target = torch.log_softmax(torch.zeros_like(logits), dim=-1)\n",  # kd.py imports no math
             ("tests/test_kd_loss.py",)),
    Mutation("kd-no-temperature-squared", "the KD term loses its T^2 factor",
             "ckptkd/distill/kd.py", "return temperature**2 * F.kl_div(", "return F.kl_div(",
             ("tests/test_kd_loss.py",)),
    Mutation("kd-unweighted-ce", "the cross-entropy term ignores alpha",
             "ckptkd/distill/kd.py", '"ce": self.cfg.alpha * F.cross_entropy(logits, y)',
             '"ce": F.cross_entropy(logits, y)',
             ("tests/test_kd_loss.py",)),
    Mutation("resume-drops-method-module", "--resume restarts a method's regressor from scratch",
             "ckptkd/train.py", '            extra.load_state_dict(state["extra"])\n', "            pass\n",
             ("tests/test_kd_methods.py::test_a_killed_fitnet_distillation_resumes_with_its_regressor",)),
    Mutation("dkd-nckd-not-renormalised", "DKD's non-target term uses the full distribution, not the one over the "
             "non-target classes", "ckptkd/distill/dkd.py", " + b * sums[2] / pt_rest\n", " + b * sums[2]\n",
             ("tests/test_kd_methods.py",)),
    Mutation("dkd-tckd-target-only", "DKD's target-class term drops the 'rest' half of the binary distribution",
             "ckptkd/distill/dkd.py", "(a * pt_rest - b) * (t_rest - s_rest)", "(-b) * (t_rest - s_rest)",
             ("tests/test_kd_methods.py",)),
    Mutation("dkd-wrong-gradient", "DKD's closed-form gradient drops the teacher's side of NCKD",
             "ckptkd/distill/dkd.py", " - (b / pt_rest)[:, None] * pt_off\n", "\n", ("tests/test_kd_methods.py",)),
    Mutation("dkd-no-warmup", "DKD ignores its warm-up", "ckptkd/distill/dkd.py",
             "        w = warmup_factor(epoch, p.warmup)\n", "        w = 1.0\n", ("tests/test_kd_methods.py",)),
    Mutation("dkd-ignores-teacher", "DKD reads a uniform teacher", "ckptkd/distill/dkd.py",
             "        target = self.teacher_log_probs(x, idx, epoch)\n",
             "        target = torch.log_softmax(torch.zeros_like(logits), dim=-1)\n", ("tests/test_kd_methods.py",)),
    Mutation("fitnet-student-features-detached", "FitNets' hint trains only the regressor, never the student",
             "ckptkd/distill/fitnet.py", "hint = F.mse_loss(self.extra(f_s).float()",
             "hint = F.mse_loss(self.extra(f_s.detach()).float()", ("tests/test_kd_methods.py",)),
    Mutation("fitnet-regressor-not-optimised", "the training loop leaves a method's regressor out of the optimizer",
             "ckptkd/train.py",
             "params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])",
             "params = list(model.parameters())", ("tests/test_kd_methods.py",)),
    Mutation("score-negated", "Algorithm 1 picks the worst checkpoint",
             "ckptkd/info/analyze.py", 'r["score"] = cfg.weight_x * sx + cfg.weight_y * sy',
             'r["score"] = -(cfg.weight_x * sx + cfg.weight_y * sy)',
             ("tests/test_algorithm1.py", "tests/test_cli.py::test_select_prints_the_choice_as_json")),
    Mutation("minmax-wrong", "the min-max normalisation divides by the maximum only",
             "ckptkd/info/analyze.py", "return [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in vals]",
             "return [v / hi if hi > 0 else 0.0 for v in vals]", ("tests/test_algorithm1.py",)),
    Mutation("top-k-lowest", "the selection takes the lowest scores",
             "ckptkd/select/picks.py", "key=lambda sc: (-sc[0], -sc[1].epoch)", "key=lambda sc: (sc[0], -sc[1].epoch)",
             ("tests/test_algorithm1.py",)),
    Mutation("probe-not-random", "the probe set ignores its seed (first members of each class)",
             "ckptkd/info/analyze.py", "picked.append(members[torch.randperm(len(members), generator=g)[:q]])",
             "picked.append(members[:q])", ("tests/test_algorithm1.py",)),
    Mutation("resume-ignores-state", "--resume restarts from scratch",
             "ckptkd/train.py", "state = run.load_state() if resume and run is not None else None",
             "state = None", ("tests/test_resume.py",)),
    Mutation("resume-ignores-optimizer", "--resume drops the optimizer's momentum",
             "ckptkd/train.py", '        opt.load_state_dict(state["optimizer"])\n', "",
             ("tests/test_resume.py",)),
    Mutation("resume-ignores-order", "--resume reshuffles as in epoch 1",
             "ckptkd/train.py", '        order.set_state(state["order"])\n', "",
             ("tests/test_resume.py",)),
    Mutation("resume-keeps-stale-metrics", "--resume keeps the log of epochs it trains again",
             "ckptkd/train.py", "        run.truncate_metrics(start - 1)\n", "        pass\n",
             ("tests/test_resume.py",)),
    Mutation("unverified-checkpoints", "a weights file without its sidecar counts as a checkpoint",
             "ckptkd/trajectory/run.py",
             '        for sidecar in sorted((self.path / "checkpoints").glob("epoch_*.json")):\n'
             '            meta = read_json(sidecar)\n',
             '        for sidecar in sorted((self.path / "checkpoints").glob("epoch_*.safetensors")):\n'
             '            sidecar = sidecar.with_suffix(".json")\n'
             '            meta = read_json(sidecar) if sidecar.exists() else {"epoch": int(sidecar.stem[6:])}\n',
             ("tests/test_resume.py",)),
    Mutation("analyze-always-recomputes", "analyze recomputes every estimate", "ckptkd/info/analyze.py",
             "        if key not in cache:\n", "        if True:\n", ("tests/test_analysis_cache.py",)),
    Mutation("analyze-key-ignores-probe", "a cached estimate is served for another probe size",
             "ckptkd/info/analyze.py", '_RAW_KEYS = ("estimator", "features", "tau", "probe_size", ',
             '_RAW_KEYS = ("estimator", "features", "tau", ', ("tests/test_analysis_cache.py",)),
    Mutation("teacher-cache-ignored", "distillation never reads the teacher-output cache",
             "ckptkd/distill/registry.py",
             "        if self.cache is not None:\n            target = self.cache.log_probs(",
             "        if False:\n            target = self.cache.log_probs(", ("tests/test_cache.py",)),
    Mutation("quiet-download", "loading digits tries the network and ignores the failure",
             "ckptkd/data/sources.py", "    from sklearn.datasets import load_digits\n",
             "    from sklearn.datasets import load_digits\n    import socket\n    try:\n"
             "        socket.create_connection(('example.com', 80), timeout=1).close()\n"
             "    except OSError:\n        pass\n", ("tests/test_network.py",)),
    Mutation("selection-reads-test", "the validation metrics are taken on the test split",
             "ckptkd/select/context.py", 'extract(model, self.data.x_val, "logits", device=self.device)\n'
             '            y = self.data.y_val',
             'extract(model, self.data.x_test, "logits", device=self.device)\n            y = self.data.y_test',
             ("tests/test_select.py",)),
    Mutation("one-se-ignored", "val-nll-1se ranks by the mean NLL alone (no standard error)",
             "ckptkd/select/policies/validation.py", "return [-max(0.0, d - se) for d, se in nll_margins(ckpts, ctx)]",
             "return [-d for d, se in nll_margins(ckpts, ctx)]", ("tests/test_select.py",)),
    Mutation("val-split-leaks", "the validation samples are trained on too",
             "ckptkd/data/__init__.py", "x, y, xv, yv = x[~val], y[~val], x[val], y[val]",
             "x, y, xv, yv = x, y, x[val], y[val]", ("tests/test_data.py",)),
    Mutation("overwrite-deletes-in-place", "--overwrite deletes the old run where it is (a kill leaves half a run)",
             "ckptkd/trajectory/run.py", "        os.rename(path, trash)\n", "        shutil.rmtree(path)\n",
             ("tests/test_resume.py::test_a_kill_while_a_run_folder_is_made_or_replaced_leaves_no_half_run",)),
    Mutation("pair-noise-symmetric", "pair noise flips to a random class instead of the next one",
             "ckptkd/data/noise.py", "    return (y[picked] + 1) % num_classes\n",
             "    return symmetric(y, num_classes, picked, rng)\n", ("tests/test_data.py",)),
    Mutation("instance-noise-uniform", "instance noise picks the samples to flip uniformly, whatever their inputs",
             "ckptkd/data/noise.py", "    picked = rng.choice(len(y), size=count, replace=False, p=q / q.sum())\n",
             "    picked = rng.choice(len(y), size=count, replace=False)\n", ("tests/test_noise.py",)),
    Mutation("instance-noise-any-other-class", "an instance-noise flip goes to any other class, not the one its "
             "projection favours", "ckptkd/data/noise.py", "    others = np.maximum(s[picked], FLOOR)\n",
             "    others = np.ones_like(s[picked])\n", ("tests/test_noise.py",)),
    Mutation("band-ties-to-later", "val-nll-knn / kd-nll-knn ignore the vote and keep the band's latest checkpoint",
             "ckptkd/select/policies/neighbour_band.py",
             "        inside = dict(zip(band, one_se_scores(self.agreements([ckpts[i] for i in band], ctx))))\n",
             "        inside = {i: 0.0 for i in band}\n", ("tests/test_select_neighbour_band.py",)),
    Mutation("vote-counts-itself", "a training sample votes for its own label among its neighbours",
             "ckptkd/select/policies/neighbour_band.py",
             "        dist[torch.arange(len(rows)), rows] = float(\"inf\")  # a sample is not its own neighbour\n",
             "", ("tests/test_select_neighbour_band.py",)),
    Mutation("kd-nll-at-fitted-temperature", "kd-nll-1se judges each teacher at its own fitted temperature, "
             "not at the KD temperature the student is taught at", "ckptkd/select/policies/kd_view.py",
             "    per = [torch.tensor(ctx.val_nll_at(c, t)[\"nll_samples\"], dtype=torch.float64) for c in ckpts]\n",
             "    per = [torch.tensor(ctx.val_metrics(c)[\"nll_ts_samples\"], dtype=torch.float64) for c in ckpts]\n",
             ("tests/test_select_kd_view.py",)),
    Mutation("bad-image-skipped-mid-run", "a streamed image that does not decode is dropped from its batch, silently",
             "ckptkd/data/stream.py", "    for _, x in items:\n        if isinstance(x, str):\n            return x\n",
             "    items = [(i, x) for i, x in items if not isinstance(x, str)]\n", ("tests/test_stream_lazy.py",)),
    Mutation("image-headers-unread", "a non-image file in an image folder is found only when its batch is decoded",
             "ckptkd/data/index.py", "if data is None or not looks_like_an_image(data):", "if data is None:",
             ("tests/test_stream_lazy.py",)),
    Mutation("resume-refuses-fixed-data", "a run stopped by a bad image cannot --resume once the file is fixed",
             "ckptkd/trajectory/run.py", '!= data_fingerprint and stopped:', '!= data_fingerprint and False:',
             ("tests/test_stream_lazy.py",)),
    Mutation("proxy-full-short", "proxy-full's students stop early, as proxy's do (the bias it exists to avoid)",
             "ckptkd/select/policies/proxy.py", "epoch_fraction=1.0, data_fraction=1.0 / max(1, len(ckpts))",
             "epoch_fraction=0.2, data_fraction=1.0 / max(1, len(ckpts))", ("tests/test_select.py",)),
    Mutation("aum-flags-ignored", "aum-fit trusts every training label (its suspect flags do nothing)",
             "ckptkd/select/policies/memorisation.py", "    return torch.where(suspect, 1.0 - p, p)\n",
             "    return p\n", ("tests/test_select_trainset.py",)),
    Mutation("aum-flags-inverted", "aum-fit suspects the labels the early trajectory agrees with",
             "ckptkd/select/policies/memorisation.py", "    return aum < 0\n", "    return aum > 0\n",
             ("tests/test_select_trainset.py",)),
    Mutation("aum-window-whole-trajectory", "aum-fit's flags read the whole trajectory, memorised labels included",
             "ckptkd/select/policies/memorisation.py", "for c in early_checkpoints(ckpts)]).mean(0)",
             "for c in ckpts]).mean(0)", ("tests/test_select_trainset.py",)),
    Mutation("cl-thresholds-ignored", "cl-fit flags every sample whose argmax is not its label (no per-class "
             "thresholds), hard ones included", "ckptkd/select/policies/confident.py",
             "    above = probs >= thresholds[None, :]\n", "    above = probs >= 0\n",
             ("tests/test_select_trainset.py",)),
    Mutation("label-wave-no-noise-band", "label-wave takes any rise of the churn, however small, as the onset",
             "ckptkd/select/policies/churn.py", "        if r_next - r > math.hypot(se, se_next):\n",
             "        if r_next - r > 0:\n", ("tests/test_select_trainset.py",)),
    Mutation("label-wave-off-by-one", "label-wave picks the checkpoint before the quiet step, not the one ending it",
             "ckptkd/select/policies/churn.py", "            return s + 1\n", "            return s\n",
             ("tests/test_select_trainset.py",)),
    Mutation("train-outputs-read-val", "the training-set pass runs on the validation split",
             "ckptkd/select/trainset.py", 'extract(model, data.x_train, "logits", device=device)',
             'extract(model, data.x_val, "logits", device=device)', ("tests/test_select_trainset.py",)),
    Mutation("budget-ignored", "a policy over the budget spends anyway",
             "ckptkd/select/budget.py", "    if rounded(need.distillations) > rounded(budget) + 1e-9:\n",
             "    if False:\n", ("tests/test_select_verdict.py",)),
    Mutation("verdict-sign", "the verdict says 'do not distil' when KD is ahead",
             "ckptkd/select/verdict.py", "    distil = not (mean - se > 0)\n", "    distil = not (mean + se < 0)\n",
             ("tests/test_select_verdict.py",)),
    Mutation("verdict-unpaired-seeds", "the verdict pairs each KD proxy with a no-KD proxy of another seed",
             "ckptkd/select/verdict.py", "        nokd_acc.append(nokd_proxy(ctx, cfg)[\"val_acc\"])\n",
             "        nokd_acc.append(nokd_proxy(ctx, dataclasses.replace(cfg, seed=cfg.seed + 7))[\"val_acc\"])\n",
             ("tests/test_select_verdict.py",)),
    Mutation("verdict-counts-pair-0-twice", "the verdict spends and reports again the KD proxy policy proxy trained",
             "ckptkd/select/verdict.py", "    return pairs * cost - (cost / 2 if reused and pairs > 0 else 0.0)\n",
             "    return pairs * cost\n", ("tests/test_select_verdict.py",)),
    Mutation("confidence-no-band", "the confidence statement calls any difference from last a lead",
             "ckptkd/select/confidence.py", '    verdict = "tied" if abs(d) <= se else',
             '    verdict = "tied" if d == 0 else',
             ("tests/test_select_verdict.py",)),
    Mutation("config-imports-a-registry", "config reads the policy registry again (a lazy import: an import circle)",
             "ckptkd/config/checks.py", "    for registry_check in _REGISTRY_CHECKS.get(type(cfg), ()):\n",
             "    from .select import POLICIES  # noqa: F401\n"
             "    for registry_check in _REGISTRY_CHECKS.get(type(cfg), ()):\n",
             ("tests/test_imports.py",)),
    Mutation("registry-checks-skipped", "config names no registry holds are accepted (a typo'd policy runs nothing)",
             "ckptkd/config/checks.py", "        registry_check(cfg)\n", "        pass\n",
             ("tests/test_imports.py", "tests/test_select.py::test_config_validation_reads_the_registry")),
    Mutation("export-unchecked", "ckptkd export writes the file without comparing it with PyTorch",
             "ckptkd/export/__init__.py", "    if not diff <= TOLERANCE:  # (also catches NaN)\n",
             "    if False:\n", ("tests/test_export.py::test_an_export_that_disagrees_is_refused_and_not_written",
                             "tests/test_export.py::test_when_no_format_captures_the_forward_every_one_is_refused")),
    Mutation("export-one-batch-size", "the export is checked at one batch size only (a fixed batch goes unseen)",
             "ckptkd/export/__init__.py", "    return [b for b in (x, x[1:8], x[:1]) if len(b)]\n",
             "    return [x]\n", ("tests/test_export.py::test_an_export_that_disagrees_is_refused_and_not_written",)),
    Mutation("torchscript-traced", "TorchScript traces instead of scripting (the format named for a branch loses it)",
             "ckptkd/export/formats/torchscript.py", "            compiled = torch.jit.script(model)\n",
             "            compiled = torch.jit.trace(model, example, check_trace=False)\n",
             ("tests/test_export.py::test_the_format_named_does_work",)),
    Mutation("export-named-temp", "the export is written to a named temporary file (a kill leaves it behind)",
             "ckptkd/export/publish.py", "os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o666 & ~_UMASK)",
             "os.open(path.with_name(f'.{path.name}.part'), os.O_CREAT | os.O_WRONLY, 0o666 & ~_UMASK)",
             ("tests/test_export.py::test_a_killed_export_leaves_no_partial_file",)),
    Mutation("ray-worker-reads-study",
             "a Ray cell reads its teachers from the driver's study folder (needs a shared disk)",
             "ckptkd/study/shipping.py", 'node_folder("teacher-cache"), tuple(readable))',
             'node_folder("teacher-cache"))',
             ("tests/test_ray_executor.py::"
              "test_ray_gives_the_local_tables_bit_for_bit_without_reading_the_study_folder",)),
    Mutation("ray-no-retries", "a cell whose Ray worker dies fails the study instead of being retried",
             "ckptkd/study/executors/ray.py", "MAX_RETRIES = 3", "MAX_RETRIES = 0",
             ("tests/test_ray_executor.py::test_a_worker_killed_mid_cell_is_retried_to_the_same_tables",)),
    Mutation("study-lock-ignored", "two drivers run one study folder at once",
             "ckptkd/study/lock.py", "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass",
             ("tests/test_executors.py::test_a_second_driver_on_a_study_folder_refuses",)),
    Mutation("temperature-at-least-1", "temperature scaling never sharpens an under-confident teacher (T >= 1)",
             "ckptkd/select/temperature.py", "T_RANGE = (1e-2, 1e2)", "T_RANGE = (1.0, 1e2)",
             ("tests/test_select_known_answers.py",)),
    Mutation("one-se-unpaired", "val-nll-1se's standard error ignores the pairing (sqrt(var a + var b) / sqrt n)",
             "ckptkd/select/policies/validation.py",
             "out.append((float(d.mean()), float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else 0.0))",
             "out.append((float(d.mean()), float((p.var() + per[best].var()).sqrt()) / math.sqrt(len(d))\n"
             "                    if len(d) > 1 else 0.0))",
             ("tests/test_select_known_answers.py",)),
    # six more (issue 22), in the data and cache keys; four of them passed every test at first
    Mutation("fingerprint-ignores-labels", "the data fingerprint hashes the inputs only: relabelled or noisier data "
             "is served the clean data's cached analyses and validation metrics",
             "ckptkd/data/__init__.py", "    for a in (x, y, xt, yt) + ((xv, yv) if len(yv) else ()):\n",
             "    for a in (x, xt) + ((xv,) if len(yv) else ()):\n", ("tests/test_data.py",)),
    Mutation("proxy-key-ignores-seed", "a proxy student's result is served for another --seed",
             "ckptkd/select/context.py", '"proxy": dataclasses.asdict(proxy_cfg), "seed": self.seed}',
             '"proxy": dataclasses.asdict(proxy_cfg)}', ("tests/test_select_known_answers.py", "tests/test_select.py")),
    Mutation("proxy-key-ignores-student", "a proxy student's result is served for another student model",
             "ckptkd/select/context.py", 'settings = {"stage": dataclasses.asdict(stage), "kd"',
             'settings = {"kd"', ("tests/test_select_known_answers.py", "tests/test_select.py")),
    Mutation("analyze-key-ignores-seed", "a cached estimate is served for another probe seed",
             "ckptkd/info/analyze.py", '"probe_size", "probe_seed")', '"probe_size")',
             ("tests/test_analysis_cache.py",)),
    Mutation("analyze-key-ignores-split", "an estimate on the training probe is served for the validation probe",
             "ckptkd/info/analyze.py", '    if split != "train":  # training-probe keys',
             '    if False:  # training-probe keys',
             ("tests/test_analysis_cache.py", "tests/test_select.py")),
    Mutation("proxy-subset-fp-ignores-seed", "proxy students' data subsets of two seeds share a fingerprint "
             "(their teacher-cache entries overwrite each other)",
             "ckptkd/select/context.py", 'f"{fp}/subset/{cfg.data_fraction}/{cfg.seed}"',
             'f"{fp}/subset/{cfg.data_fraction}"',
             ("tests/test_select_known_answers.py", "tests/test_select.py")),
    Mutation("select-seed-ignored", "select --seed is accepted and ignored (issue 22)",
             "ckptkd/cli/commands.py", 'seed = overrides.get("seed", run_cfg.get("seed", 0))',
             'seed = run_cfg.get("seed", 0)',
             ("tests/test_select_known_answers.py::test_select_seed_seeds_the_proxy_student",)),
    Mutation("torchrun-teardown", "a torchrun script that never calls finish() goes through interpreter teardown",
             "ckptkd/parallel.py", "        _end_at_exit()\n", "        atexit.register(leave)\n",
             (NO_FINISH,)),
    Mutation("torchrun-exit-status-lost", "a torchrun script's sys.exit(3) ends its ranks with status 0",
             "ckptkd/parallel.py", "    finish(_exit_status())\n", "    finish(0)\n",
             (NO_FINISH,)),
    Mutation("torchrun-uncaught-status-lost", "a torchrun script that raises ends its ranks with status 0",
             "ckptkd/parallel.py", "    if uncaught is not None:\n", "    if False:\n", (NO_FINISH,)),
    Mutation("label-gap-warned-only", "labels 0 and 1000 train a 1001-class model with a warning",
             "ckptkd/data/__init__.py", "    if len(empty) > k:\n", "    if False:\n", ("tests/test_labels.py",)),
    Mutation("teacher-head-unchecked", "a teacher module with another head size fails mid-training with a traceback",
             "ckptkd/distill/api.py", "    check_teacher_classes(teacher, data, device)\n", "",
             ("tests/test_labels.py",)),
    Mutation("run-budget-after-teacher", "ckptkd run refuses an over-budget policy only after training the teacher",
             "ckptkd/pipeline.py", "    check_selection_budget(cfg, data)  # before the teacher trains",
             "    pass  # before the teacher trains",
             ("tests/test_errors_table.py::test_bad_input_is_answered_in_one_line[run-over-budget]",)),
]


def copy_repo(dest: Path) -> None:
    """The working tree as it is (committed or not), without git data and generated folders."""
    skip = shutil.ignore_patterns(".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT, dest, ignore=skip)


def apply(copy: Path, m: Mutation) -> str:
    """Apply ``m`` to the copy; return the file's original text."""
    path = copy / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        sys.exit(f"mutation {m.name}: its text occurs {text.count(m.old)} times in {m.file}, not once; "
                 "the code moved: update MUTATIONS in scripts/mutation_check.py")
    path.write_text(text.replace(m.old, m.new))
    return text


def run_tests(copy: Path, tests: tuple[str, ...], log: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                               cwd=copy, env=env, stdout=f, stderr=subprocess.STDOUT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="mutations to apply (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--baseline", action="store_true", help="first check that the unmutated copy passes the tests")
    args = p.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:28} {m.why}")
        return 0
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        sys.exit(f"unknown mutation(s): {', '.join(sorted(unknown))}; see --list")
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    with tempfile.TemporaryDirectory(prefix="ckptkd-mutants-") as tmp:
        copy, logs = Path(tmp) / "repo", Path(tmp) / "logs"
        copy_repo(copy)
        logs.mkdir()
        for m in chosen:  # every text must be found before anything runs
            (copy / m.file).write_text(apply(copy, m))
        if args.baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            if run_tests(copy, tests, logs / "baseline.log") != 0:
                print((logs / "baseline.log").read_text()[-3000:])
                sys.exit("the unmutated copy fails these tests; fix that first")
        results = []
        for m in chosen:
            original = apply(copy, m)
            t0 = time.monotonic()
            rc = run_tests(copy, m.tests, logs / f"{m.name}.log")
            (copy / m.file).write_text(original)
            verdict = {0: "MISSED", 1: "caught"}.get(rc, f"error (pytest exit {rc})")
            results.append((m, verdict))
            print(f"{m.name:28} {verdict:8} {time.monotonic() - t0:6.0f} s  {m.why}", flush=True)
            if rc not in (0, 1):
                print((logs / f"{m.name}.log").read_text()[-2000:])
    caught = sum(v == "caught" for _, v in results)
    print(f"\n{caught} of {len(results)} mutations caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
