"""ckptkd: knowledge distillation from model checkpoints.

Implements "Efficient Knowledge Distillation from Model Checkpoints" (Wang, Yang, Huang,
Song, Huang; NeurIPS 2022): keep a teacher's trajectory, estimate I(X;F) and I(Y;F) of
each checkpoint, choose the teacher (or a snapshot ensemble) by Algorithm 1, distill.

    import ckptkd
    data = ckptkd.load_dataset("mnist1d")
    teacher, _ = ckptkd.train(data, ckptkd.StageConfig(model="cnn1d_l", epochs=20, save_every=2), run=run)
"""
from . import info, study  # noqa: F401  (with data, models, select below: every registry checks its config names)
from .config import (DataConfig, DistillConfig, InfoConfig, KDConfig, ProxyConfig, RunConfig, SelectConfig,
                     StageConfig, TrainConfig, load_config)
from .data import Dataset, load_dataset
from .distill import KD, distill, kd_loss
from .errors import CkptkdError
from .models import create_model, list_models, penultimate, register_model
from .select import SelectionContext, choose
from .teacher import Teacher
from .train import CrossEntropy, evaluate, fit, train
from .trajectory import Checkpoint, Run, Trajectory, load_model, open_checkpoint, open_trajectory
from .version import __version__

__all__ = [
    "DataConfig", "DistillConfig", "InfoConfig", "KDConfig", "ProxyConfig", "RunConfig", "SelectConfig", "StageConfig",
    "TrainConfig", "load_config", "Dataset", "load_dataset", "KD", "Teacher", "distill", "kd_loss",
    "CkptkdError", "create_model", "list_models", "penultimate", "register_model", "choose", "SelectionContext",
    "CrossEntropy", "evaluate", "fit", "train", "Checkpoint", "Run", "Trajectory", "load_model", "open_checkpoint",
    "open_trajectory",
    "analyze", "run_pipeline", "__version__",
]


def analyze(*args, **kwargs):
    """See ``ckptkd.info.analyze.analyze``."""
    from .info.analyze import analyze as _analyze

    return _analyze(*args, **kwargs)


def run_pipeline(*args, **kwargs):
    """See ``ckptkd.pipeline.run_pipeline``."""
    from .pipeline import run_pipeline as _run

    return _run(*args, **kwargs)
