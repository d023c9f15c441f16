"""Shared fixtures: a per-session data cache, the digits dataset, and one tiny trained run.

Everything here is session-scoped and built once; tests that write into a run folder
copy it first (``run_copy``), so the shared one stays as it was trained.
"""
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from ckptkd import DataConfig, Run, StageConfig, load_dataset, train
from ckptkd.config import to_dict

# the test models are tiny: one thread is faster, and immune to other processes on the cores
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def ckptkd_cache(tmp_path_factory):
    """CKPTKD_CACHE points at a fresh folder, so generated MNIST-1D is cached per session."""
    path = tmp_path_factory.mktemp("ckptkd-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CKPTKD_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits: 1293 train / 144 validation / 360 test images of 10 classes."""
    return load_dataset(DataConfig(spec="digits"))


TINY_STAGE = StageConfig(model="mlp_xs", epochs=3, batch_size=64, lr=0.05, save_every=1)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, digits) -> Run:
    """An mlp_xs trained on digits for 3 epochs, a checkpoint after each. Treat as read-only."""
    path = tmp_path_factory.mktemp("shared") / "run"
    run = Run.create(path, {"data": {"spec": "digits"}, "train": to_dict(TINY_STAGE)}, model=TINY_STAGE.model,
                     num_classes=digits.num_classes, in_shape=digits.in_shape, data_fingerprint=digits.fingerprint)
    train(digits, TINY_STAGE, seed=0, run=run, progress=False)
    return Run(path)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Run:
    """A private copy of ``trained_run`` that a test may write into."""
    path = tmp_path / "run"
    shutil.copytree(trained_run.path, path)
    return Run(path)


def tree_digest(folder) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path: compare before/after a command."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def digest():
    return tree_digest


class Fixed(nn.Module):
    """A 'model' whose logits are given, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits
