"""The config sections: one typed dataclass per YAML section, each key a field (and a CLI flag).

They know no layer above them: parsing is ``ckptkd.config.parse``, the type and range checks
``ckptkd.config.checks``, and the names a registry owns are checked by that registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

@dataclass
class DataConfig:
    # mnist1d | digits | npz:PATH | cifar10:DIR | cifar100:DIR | imagefolder:DIR | webdataset:DIR | module:function
    spec: str = "mnist1d"
    num_samples: int = 5000  # mnist1d: samples generated (80% train)
    seed: int = 0  # generation and split seed (not the training seed)
    test_fraction: float = 0.2  # digits and imagefolder without a train/test split
    image_size: Optional[int] = None  # imagefolder: resize to a square of this side
    augment: str = "default"  # none | shift | shift+flip | default (flips only CIFAR); YAML true/false: default/none
    label_noise: float = 0.0  # share of training labels replaced by another class (seeded)
    # symmetric (a random other class) | pair (the next class) | instance (ambiguous samples flip more)
    label_noise_kind: str = "symmetric"
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
    # the default is the rule with the best worst case over every study of docs/selection.md:
    # no policy there beats the full teacher's, so it is `last` until one does on a round it has
    # not seen; any registered policy (`ckptkd policies`), or a+b for the union of their picks
    policy: str = "last"
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
    snapshot_policies: list[str] = field(
        default_factory=lambda: ["mi", "best-val", "val-nll", "val-nll-1se", "kd-nll-knn"])
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # policy proxy's budget
    budget: float = 1.0  # what each policy (and the verdict) may spend, in full distillations (0: probes only)
    # the regret-against-budget sweep: for each B, policy proxy fitted to spend B distillations,
    # recorded as policy ``proxy@B`` beside the others; it carries its own B, so the study's
    # ``budget`` does not refuse it ([]: no sweep; 0 is noted and skipped: proxy cannot run for free)
    budget_sweep: list[float] = field(default_factory=list)
    device: str = "auto"  # checked here; the rest of a study's checks: ckptkd.study.runner
    resources: CellResources = field(default_factory=CellResources)  # per cell, under --executor ray


AUGMENT_CHOICES = ("none", "shift", "shift+flip", "default")


def augment_choice(value):
    """``data.augment`` as one of AUGMENT_CHOICES: a YAML ``true``/``false`` (its old spelling)
    means ``default``/``none``."""
    return {True: "default", False: "none"}.get(value, value) if isinstance(value, bool) else value
