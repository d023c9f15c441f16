"""Typed configs: how they are parsed, and their type and range checks.

YAML files mirror the CLI flags: each section is a dataclass, each key a field. Unknown
keys, wrong types and out-of-range values are ``CkptkdError``s that name the key. Names that
a registry owns (a policy, an estimator, a noise kind) are checked by that registry, with a
function it adds here (``checks``): this module sits below every layer and imports none.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from .errors import CkptkdError, closest


@dataclass
class DataConfig:
    spec: str = "mnist1d"  # mnist1d | digits | npz:PATH | cifar10:DIR | cifar100:DIR | imagefolder:DIR | webdataset:DIR | module:function
    num_samples: int = 5000  # mnist1d: samples generated (80% train)
    seed: int = 0  # generation and split seed (not the training seed)
    test_fraction: float = 0.2  # digits and imagefolder without a train/test split
    image_size: Optional[int] = None  # imagefolder: resize to a square of this side
    augment: str = "default"  # none | shift | shift+flip | default (flips only CIFAR); YAML true/false: default/none
    label_noise: float = 0.0  # share of training labels replaced by another class (seeded)
    label_noise_kind: str = "symmetric"  # symmetric (a random other class) | pair (the next class)
    val_fraction: float = 0.1  # share of the training data held out for validation (stratified, seeded)
    # imagefolder, webdataset: leave the images on disk and decode them per batch (true), decode them
    # into memory (false), or unset: stream when they would take more than half the memory available
    stream: Optional[bool] = None
    workers: int = 2  # processes decoding images (the upcoming batches when streaming; 0: this process)


@dataclass
class StageConfig:
    """One training of one model: the teacher's, or a student's."""

    model: str = "cnn1d_m"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | multistep
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr *= gamma
    gamma: float = 0.1
    save_every: int = 0  # 0: only the last epoch
    compile: bool = False  # torch.compile the model (worth it on CUDA, for long runs)


@dataclass
class DKDParams:
    """Method ``dkd``'s own parameters (config section ``kd.dkd``; see ``ckptkd.distill.dkd``).

    The defaults are the official code's CIFAR-100 settings (mdistiller, configs/cifar100/dkd).
    """

    ce_weight: float = 1.0  # weight of the cross-entropy term (kd.alpha is Hinton KD's, unused here)
    alpha: float = 1.0  # weight of TCKD, the target-vs-rest binary term
    beta: float = 8.0  # weight of NCKD, the term among the non-target classes
    warmup: int = 20  # epochs over which the DKD term ramps up linearly, min(epoch / warmup, 1) (0: none)


@dataclass
class FitNetParams:
    """Method ``fitnet``'s own parameters (``kd.fitnet``; see ``ckptkd.distill.fitnet``)."""

    ce_weight: float = 1.0  # weight of the cross-entropy term
    weight: float = 1.0  # weight of the hint term, MSE(regressor(F_student), F_teacher)


@dataclass
class KDConfig:
    """How a student learns from its teacher: ``method`` (a registered distillation method,
    ``ckptkd.distill.registry``) and the settings the methods share; a method's own parameters
    live in the section of its name (``kd.dkd.beta``). The default is Hinton KD:
    alpha * CE + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))."""

    method: str = "kd"  # kd | dkd | fitnet, or any registered method (`ckptkd methods`)
    temperature: float = 4.0  # of the teacher's target (every logit method)
    alpha: float = 0.1  # method kd: the weight of cross-entropy
    combine: str = "logits"  # how an ensemble teacher combines members: logits | probs
    dkd: DKDParams = field(default_factory=DKDParams)
    fitnet: FitNetParams = field(default_factory=FitNetParams)


@dataclass
class KDEParams:
    """Estimator ``kde``'s own parameters (config section ``info.kde``)."""

    noise_fraction: float = 0.1  # noise variance s2 as a fraction of the median squared distance


@dataclass
class RenyiParams:
    """Estimator ``renyi``'s own parameters (``info.renyi``)."""

    alpha: float = 1.01  # the order alpha
    subset: int = 1000  # rows per eigensolve (it is cubic); the mean over ``repeats`` random subsets
    repeats: int = 3


@dataclass
class CategoricalParams:
    """Estimator ``categorical`` has no parameters of its own: it reads the softmax at ``info.tau``."""


@dataclass
class BinningParams:
    """Estimator ``binning``'s own parameters (``info.binning``)."""

    bins: int = 30  # bins per unit


@dataclass
class InfoConfig:
    """How I(X;F) and I(Y;F) are estimated for each checkpoint (see docs/information.md).

    Each estimator's parameters live in its own section (``info.kde.noise_fraction``); the
    flat keys of older configs (``info.noise_fraction``, ``info.alpha``, ``info.bins``) still read.
    """

    estimator: str = "kde"  # a registered estimator (ckptkd.info.registry): kde | renyi | categorical | binning
    features: str = "penultimate"  # penultimate | logits | softmax
    tau: float = 1.0  # softmax temperature (features softmax, estimator categorical)
    probe_size: int = 2000  # class-stratified training samples, the same for every checkpoint
    probe_seed: int = 0
    kde: KDEParams = field(default_factory=KDEParams)
    renyi: RenyiParams = field(default_factory=RenyiParams)
    categorical: CategoricalParams = field(default_factory=CategoricalParams)
    binning: BinningParams = field(default_factory=BinningParams)
    weight_x: float = 1.0  # Algorithm 1 score = weight_x * I(X;F)~ + weight_y * I(Y;F)~
    weight_y: float = 1.0
    scaling: str = "minmax"  # minmax (across the run's checkpoints) | ceiling (log N, H(Y)) | raw


@dataclass
class ProxyConfig:
    """Policy ``proxy``: a short distillation from each candidate, scored by its val accuracy."""

    model: Optional[str] = None  # the proxy student (None: the real student's model)
    epoch_fraction: float = 0.2  # of the student's epochs (at least one epoch)
    data_fraction: float = 1.0  # of the training data (a class-stratified, seeded subset)
    seed: int = 0  # the proxy student's initialisation and the data subset


@dataclass
class CellResources:
    """What one study cell asks of a Ray cluster (``ckptkd study --executor ray``; docs/cluster.md).
    The local executor runs ``--jobs`` cells at a time and ignores these."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # > 0: the cell runs on the GPU Ray gives it (fractions pack cells onto one GPU)


@dataclass
class SelectConfig:
    # the default reads held-out data only and is chosen for its worst case (docs/selection.md);
    # any registered policy (`ckptkd policies`), or a+b for the union of their picks
    policy: str = "val-nll-1se"
    k: int = 1  # checkpoints each policy picks (a snapshot ensemble when > 1)
    min_spacing: int = 0  # with k > 1: minimum epochs between picked checkpoints
    checkpoints: list[int] = field(default_factory=list)  # policy explicit: epochs to use
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    budget: float = 1.0  # what selection may spend, in full distillations (0: probes only); ckptkd.select.budget


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_l", save_every=3))
    seed: int = 0
    device: str = "auto"


@dataclass
class DistillConfig:
    data: DataConfig = field(default_factory=DataConfig)
    student: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_xs"))
    kd: KDConfig = field(default_factory=KDConfig)
    teachers: list[str] = field(default_factory=list)  # checkpoint files (safetensors, .pt, .ckpt)
    teacher_model: Optional[str] = None  # architecture of foreign checkpoints
    seed: int = 0
    device: str = "auto"


@dataclass
class RunConfig:
    """The main job: train a teacher, choose a checkpoint, distill, compare with baselines."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_l", epochs=30, save_every=3))
    student: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_xs", epochs=30))
    kd: KDConfig = field(default_factory=KDConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    info: InfoConfig = field(default_factory=InfoConfig)
    seed: int = 0
    device: str = "auto"


@dataclass
class StudyConfig:
    """A grid of cells that measures whether intermediate teachers and the selection work.

    Trajectory = the first teacher seed; the other teacher seeds give the full ensemble.
    Every checkpoint of the trajectory teaches ``len(student_seeds)`` students.
    """

    name: str = "study"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_l", epochs=30, save_every=3))
    student: StageConfig = field(default_factory=lambda: StageConfig(model="cnn1d_xs", epochs=30))
    kd: KDConfig = field(default_factory=KDConfig)
    info: InfoConfig = field(default_factory=InfoConfig)
    teacher_seeds: list[int] = field(default_factory=lambda: [0, 1])
    student_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    ensemble_size: int = 2  # independent teachers in the full ensemble; checkpoints in snapshot ensembles
    estimators: list[str] = field(default_factory=lambda: ["kde", "renyi", "categorical", "binning"])
    policies: list[str] = field(default_factory=list)  # selection policies measured ([]: every registered one)
    # policies whose snapshot ensemble (k = ensemble_size) gets students of its own; the other
    # policies' ensemble picks are reported, with a student where one of these cells has it
    snapshot_policies: list[str] = field(default_factory=lambda: ["mi", "best-val", "val-nll", "val-nll-1se"])
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # policy proxy's budget
    budget: float = 1.0  # what each policy (and the verdict) may spend, in full distillations (0: probes only)
    device: str = "auto"  # checked here; the rest of a study's checks: ckptkd.study.runner
    resources: CellResources = field(default_factory=CellResources)  # per cell, under --executor ray


# ---------------------------------------------------------------- parsing


def from_dict(cls, data: Any, where: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CkptkdError(f"config section {where or 'top level'!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = _legacy_keys(cls, data)
    defaults = cls()
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise CkptkdError(f"unknown config key {path!r}{closest(str(key), names)}")
        if cls is DataConfig and key == "augment":
            value = augment_choice(value)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # a partial section keeps this parent's defaults for it (teacher vs student models)
            value = {**dataclasses.asdict(getattr(defaults, key)), **_legacy_keys(hints[key], value)}
        kwargs[key] = _coerce(hints[key], value, path)
    obj = cls(**kwargs)
    validate(obj, where)
    return obj


# keys that moved into a section of their own: (class, old key) -> section
_MOVED = {("InfoConfig", "noise_fraction"): "kde", ("InfoConfig", "alpha"): "renyi", ("InfoConfig", "bins"): "binning"}


def _legacy_keys(cls, data: dict) -> dict:
    """``data`` with the keys of older configs moved where they live now (info.alpha -> info.renyi.alpha)."""
    moved = {k: v for k, v in data.items() if (cls.__name__, k) in _MOVED}
    if not moved:
        return data
    data = {k: v for k, v in data.items() if k not in moved}
    for key, value in moved.items():
        section = _MOVED[(cls.__name__, key)]
        inner = data.get(section) if isinstance(data.get(section), dict) else {}
        data[section] = {key: value, **inner}  # the new place wins when both are given
    return data


def _coerce(tp, value, path: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise CkptkdError(f"config key {path!r} must be a list, got {value!r}")
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp]
    if not ok(value):
        raise CkptkdError(f"config key {path!r} must be {tp.__name__}, got {value!r}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an int beyond float range (YAML reads any number of digits)
            raise CkptkdError(f"config key {path!r} is too large for a float") from None
        if not math.isfinite(value):  # YAML's .inf / .nan, or --lr inf: no setting means that
            raise CkptkdError(f"config key {path!r} must be a finite number, got {value}")
        return value
    return value


AUGMENT_CHOICES = ("none", "shift", "shift+flip", "default")


def augment_choice(value):
    """``data.augment`` as one of AUGMENT_CHOICES: a YAML ``true``/``false`` (its old spelling)
    means ``default``/``none``."""
    return {True: "default", False: "none"}.get(value, value) if isinstance(value, bool) else value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def hashed_form(config):
    """``config`` (a ``to_dict``) as its hash reads it: ``data.stream`` always as false. Streamed inputs
    are bitwise those in memory, and an unset ``stream`` may choose either way on another machine, so
    the choice is no part of what a run is; false is what every config said before it could be unset."""
    if isinstance(config, dict):
        return {k: (False if k == "stream" and isinstance(v, (bool, type(None))) else hashed_form(v))
                for k, v in config.items()}
    return config


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a mapping of sections; every way it can be wrong is a CkptkdError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise CkptkdError(f"config file {str(path)!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CkptkdError(f"config file {str(path)!r} is not valid YAML ({first})") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise CkptkdError(f"config file {str(path)!r} is nested too deeply to be a ckptkd config") from None
    except OSError as e:  # a folder, an unreadable file, ...
        raise CkptkdError(f"config file {str(path)!r} cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise CkptkdError(f"config file {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(cls, path: str | Path | None, overrides: dict | None = None):
    """Read a YAML config of type ``cls`` and apply dotted-key overrides (CLI flags)."""
    data = read_yaml(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CkptkdError(f"config key {p!r} must be a mapping to set {dotted!r}")
        node[leaf] = value
    return from_dict(cls, data)


# ---------------------------------------------------------------- validation


# A registry checks the names it owns, with @checks(Section) in its own module (ckptkd.data.noise:
# data.label_noise_kind; info.registry: info.estimator; select.choose: select.policy); a new one
# joins the same way. A study's checks, which know how it uses seeds and checkpoints, are in
# ckptkd.study.runner. ckptkd/__init__.py imports all of them, and runs before this module does.
_REGISTRY_CHECKS: dict[type, list[Callable[[Any], None]]] = {}


def checks(cls: type):
    """Decorator: ``fn(section)`` runs on every ``cls`` section ``from_dict`` builds, after its range checks."""
    def add(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _REGISTRY_CHECKS.setdefault(cls, []).append(fn)
        return fn

    return add


def check(cond: bool, message: str) -> None:
    if not cond:
        raise CkptkdError(message)


def one_of(key: str, value: str, choices) -> None:
    check(value in choices, f"{key} must be one of {', '.join(choices)}, got {value!r}{closest(value, choices)}")


def check_budget(value: float, key: str) -> None:
    """A selection budget: a finite number of full distillations >= 0 (ckptkd.select.budget)."""
    check(math.isfinite(value) and value >= 0, f"{key} must be a number of full distillations >= 0 (e.g. 1; 0 "
                                               f"means probes only), got {value!r}")


def validate(cfg, where: str = "") -> None:
    """A section's range checks, then its registries' (``checks``); ``from_dict`` calls it on each section."""
    if isinstance(cfg, DataConfig):
        check(cfg.num_samples >= 20, f"data.num_samples must be at least 20, got {cfg.num_samples}")
        check(0 < cfg.test_fraction < 1, f"data.test_fraction must be in (0, 1), got {cfg.test_fraction}")
        check(cfg.image_size is None or cfg.image_size > 0, "data.image_size must be positive")
        check(0 <= cfg.label_noise < 1, f"data.label_noise must be in [0, 1), got {cfg.label_noise}")
        check(0 <= cfg.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
        one_of("data.augment", augment_choice(cfg.augment), AUGMENT_CHOICES)
        check(cfg.workers >= 0, f"data.workers must be >= 0, got {cfg.workers}")
    elif isinstance(cfg, StageConfig):
        at = f"{where}." if where else ""  # teacher., student. or train.
        check(cfg.epochs > 0, f"{at}epochs must be a positive integer, got {cfg.epochs}")
        check(cfg.batch_size > 1, f"{at}batch_size must be at least 2 (BatchNorm needs it), got {cfg.batch_size}")
        check(cfg.lr > 0, f"{at}lr must be positive, got {cfg.lr}")
        check(0 <= cfg.momentum < 1, f"{at}momentum must be in [0, 1), got {cfg.momentum}")
        check(cfg.weight_decay >= 0, f"{at}weight_decay must be >= 0, got {cfg.weight_decay}")
        one_of(f"{at}schedule", cfg.schedule, ("cosine", "multistep"))
        check(cfg.save_every >= 0, f"{at}save_every must be >= 0, got {cfg.save_every}")
        check(0 < cfg.gamma <= 1, f"{at}gamma must be in (0, 1], got {cfg.gamma}")
    elif isinstance(cfg, KDConfig):
        check(cfg.temperature > 0, f"kd.temperature must be positive, got {cfg.temperature}")
        check(0 <= cfg.alpha <= 1, f"kd.alpha must be in [0, 1], got {cfg.alpha}")
        one_of("kd.combine", cfg.combine, ("logits", "probs"))
    elif isinstance(cfg, SelectConfig):
        check(cfg.k >= 1, f"select.k must be at least 1, got {cfg.k}")
        check(cfg.min_spacing >= 0, f"select.min_spacing must be >= 0, got {cfg.min_spacing}")
        check_budget(cfg.budget, "select.budget")
    elif isinstance(cfg, ProxyConfig):
        check(0 < cfg.epoch_fraction <= 1, f"select.proxy.epoch_fraction must be in (0, 1], got {cfg.epoch_fraction}")
        check(0 < cfg.data_fraction <= 1, f"select.proxy.data_fraction must be in (0, 1], got {cfg.data_fraction}")
    elif isinstance(cfg, KDEParams):
        check(cfg.noise_fraction > 0, f"info.kde.noise_fraction must be positive, got {cfg.noise_fraction}")
    elif isinstance(cfg, RenyiParams):
        check(cfg.alpha > 0 and cfg.alpha != 1, f"info.renyi.alpha must be positive and not 1, got {cfg.alpha}")
        check(cfg.subset >= 10 and cfg.repeats >= 1, "info.renyi.subset must be at least 10 and repeats at least 1")
    elif isinstance(cfg, BinningParams):
        check(cfg.bins >= 2, f"info.binning.bins must be at least 2, got {cfg.bins}")
    elif isinstance(cfg, InfoConfig):
        one_of("info.features", cfg.features, ("penultimate", "logits", "softmax"))
        one_of("info.scaling", cfg.scaling, ("minmax", "ceiling", "raw"))
        check(cfg.tau > 0, f"info.tau must be positive, got {cfg.tau}")
        check(cfg.probe_size >= 10, f"info.probe_size must be at least 10, got {cfg.probe_size}")
        check(cfg.weight_x >= 0 and cfg.weight_y >= 0 and cfg.weight_x + cfg.weight_y > 0,
              "info.weight_x and info.weight_y must be >= 0 and not both 0")
    elif isinstance(cfg, StudyConfig):
        check_budget(cfg.budget, "budget")
    for registry_check in _REGISTRY_CHECKS.get(type(cfg), ()):
        registry_check(cfg)
    if hasattr(cfg, "device"):
        check(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
              f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
