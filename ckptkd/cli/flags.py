"""Flags that would do nothing in the case at hand are refused, not ignored.

Some flags matter only for some policies, estimators, schedules or datasets: ``select --seed``
seeds the proxy student, which only policies ``proxy`` and ``proxy-full`` train; ``--probe-size``
sizes the probe of the information estimates, which only ``mi``, ``iyf`` and their ``-val``
variants read. A user who passes such a flag expects it to change the result; one line
saying that it cannot, and why, is better than a result computed without it. Each check
here reads only what the command has already resolved (the policy, the config), and only
flags given on the command line: a config file may well hold settings for other cases.
"""
from __future__ import annotations

from ..errors import CkptkdError

INFO_FLAGS = {"info.estimator": "--estimator", "info.features": "--features", "info.probe_size": "--probe-size",
              "info.probe_seed": "--probe-seed", "info.scaling": "--scaling", "info.tau": "--tau"}


def _refuse(flag: str, why: str) -> None:
    raise CkptkdError(f"{flag} has no effect here: {why}; drop it")


def check_info_flags(overrides: dict, info, policy: str | None = None) -> None:
    """The information-estimate flags given, for ``analyze`` (``policy`` None) or a selection
    under ``policy``; ``info`` is the resolved ``InfoConfig``."""
    given = [flag for key, flag in INFO_FLAGS.items() if key in overrides]
    if policy is not None and given:
        from ..select import POLICIES

        parts = [POLICIES[p] for p in policy.split("+")]
        if not any("analysis" in p.needs for p in parts):
            readers = ", ".join(n for n, p in POLICIES.items() if "analysis" in p.needs)
            _refuse(given[0], f"policy {policy} reads no information estimate (only {readers} do)")
        if "info.scaling" in overrides and not any(getattr(p, "key", "") == "score" for p in parts):
            scorers = ", ".join(n for n, p in POLICIES.items() if getattr(p, "key", "") == "score")
            _refuse("--scaling", f"policy {policy} reads raw estimates, not the scaled score (only {scorers} do)")
    if "info.tau" in overrides and info.features != "softmax" and info.estimator != "categorical":
        _refuse("--tau", f"it is the softmax temperature of --features softmax and --estimator categorical, and this "
                         f"analysis uses --features {info.features} with --estimator {info.estimator}")


def check_select_flags(args, overrides: dict, parts: list[str]) -> None:
    """``ckptkd select``: the flags of ``explicit`` and of ensembles (the proxy student's are
    ``check_proxy_flags``, once the verdict's spend is known)."""
    if args.checkpoints and "explicit" not in parts:
        _refuse("--checkpoints", f"it lists the epochs of policy explicit, and policy {args.policy} chooses its own")
    if args.k > 1 and parts == ["explicit"]:
        _refuse("-k", "policy explicit takes the epochs of --checkpoints, however many -k asks for")
    if args.min_spacing and args.k == 1:
        _refuse("--min-spacing", "it spaces the picks of a snapshot ensemble, and -k 1 makes one pick")


def check_proxy_flags(args, overrides: dict, parts: list[str], verdict_why_not: tuple[str, str] | None) -> None:
    """``ckptkd select``: the proxy student's flags set the students of the proxy policies and
    of the verdict on distilling; refused when neither trains one (``verdict_why_not``: why
    the verdict will not, from ``ckptkd.select.verdict.pairs_to_train``)."""
    from ..select import POLICIES

    if any("proxy" in POLICIES[p].needs for p in parts) or verdict_why_not is None:
        return
    trainers = ", ".join(n for n, p in POLICIES.items() if "proxy" in p.needs)
    for key, flag in (("seed", "--seed"), ("student.model", "--student-model"), ("student.epochs", "--student-epochs")):
        if key in overrides:
            _refuse(flag, f"it sets the proxy student, and policy {args.policy} trains none (only {trainers} do), "
                          f"nor does the verdict on distilling here ({verdict_why_not[0]})")


def check_input_flags(args, overrides: dict, parts: list[str]) -> bool:
    """Whether ``ckptkd select`` under ``parts`` reads any input (data, model outputs); when it
    reads only the epochs (last, halfway, explicit), the flags of the inputs are refused."""
    from ..select import POLICIES

    if any(POLICIES[p].needs for p in parts):
        return True
    given = [flag for key, flag in (("data.spec", "--data"), ("data.stream", "--stream"), ("data.workers", "--workers"),
                                    ("device", "--device"), ("select.budget", "--budget")) if key in overrides]
    if args.config:
        given.append("--config")
    if given:
        _refuse(given[0], f"policy {args.policy} reads only the checkpoints' epochs, no data and no model")
    return False


def check_run_flags(overrides: dict, cfg) -> None:
    """``ckptkd run``: ``--checkpoints``, ``-k`` and the information flags, under the resolved ``cfg.select``."""
    parts = cfg.select.policy.split("+")
    if "select.checkpoints" in overrides and "explicit" not in parts:
        _refuse("--checkpoints", f"it lists the epochs of policy explicit, and policy {cfg.select.policy} "
                                 "chooses its own")
    if "select.k" in overrides and cfg.select.k > 1 and parts == ["explicit"]:
        _refuse("-k", "policy explicit takes the epochs of --checkpoints, however many -k asks for")
    check_info_flags(overrides, cfg.info, cfg.select.policy)


def check_stage_flags(overrides: dict, section: str, stage) -> None:
    """``--milestones`` only moves the learning rate of the multistep schedule."""
    if f"{section}.milestones" in overrides and stage.schedule != "multistep":
        _refuse("--milestones", f"they are the epochs of the multistep schedule, and {section}.schedule is "
                                f"{stage.schedule} (pass --schedule multistep)")


def check_data_flags(overrides: dict, data) -> None:
    """``--workers`` decode images; a built-in dataset of arrays has nothing to decode (a user's
    function may return ``ImageFiles``, which are decoded)."""
    from ..data.registry import list_sources, resolve

    source = resolve(data.spec)[0] if "data.workers" in overrides else None
    if source is not None and not source.streams and source.arg != "function":
        decoders = ", ".join(s.usage for s in list_sources() if s.streams)
        _refuse("--workers", f"they decode image files ({decoders}), and dataset {data.spec!r} holds none")


def check_teacher_flags(overrides: dict, teachers: list) -> None:
    """``distill --combine`` is the rule of an ensemble: one ``--teacher`` is none."""
    if "kd.combine" in overrides and len(teachers) == 1:
        _refuse("--combine", "it combines the members of an ensemble, and one --teacher was given")


def check_out_flags(args) -> None:
    """``--resume`` keeps the run in --out and ``--overwrite`` replaces it: together, one of them
    would be ignored (resume wins over a run, overwrite has nothing to do without one)."""
    if args.resume and args.overwrite:
        raise CkptkdError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                          "--overwrite replaces it; pass one")


def check_method_flags(cfg, teachers: int | None = None, overrides: dict | None = None, models: bool = True) -> None:
    """``cfg.kd.method`` and its parameters, a KD flag the method would not read (``--alpha``
    with dkd), and for a method that reads features the teacher and student models of
    ``cfg``: checked before anything is trained or written."""
    from ..data import load_dataset
    from ..distill import check_method as check_kd_method
    from ..models import create_model

    method = check_kd_method(cfg.kd, teachers=teachers)
    for key in ("temperature", "alpha", "combine"):
        if f"kd.{key}" in (overrides or {}) and key not in method.shared:
            raise CkptkdError(f"--{key} is not read by kd.method {method.name}; set its own parameters in the "
                              f"config section kd.{method.name} (--config)")
    if method.needs_features and models:  # distill checks its checkpoints' models itself
        data = load_dataset(cfg.data)
        method.check_models(*({stage.model: create_model(stage.model, data.num_classes, data.in_shape)}
                              for stage in (cfg.teacher, cfg.student)), data.in_shape)
