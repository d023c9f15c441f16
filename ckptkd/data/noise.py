"""Label noise: ``data.label_noise`` of the training (and validation) labels are replaced,
seeded, before anything trains. The test labels are never touched.

Each kind is a function ``(y, num_classes, picked, rng) -> new labels of y[picked]``,
registered by name in ``NOISE_KINDS`` (``data.label_noise_kind``):

- ``symmetric``: a uniformly drawn *other* class, the noise of most KD-under-noise papers.
- ``pair``: the next class, ``(y + 1) mod C`` ("pairflip", Han et al., Co-teaching, NeurIPS
  2018). Structured noise: a teacher that memorises it learns a systematic confusion
  between neighbouring classes, which a student then inherits. Below a share of 0.5 the
  true class still outnumbers the flipped one in every class.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import DataConfig, check, checks, one_of

NoiseKind = Callable[[np.ndarray, int, np.ndarray, np.random.Generator], np.ndarray]


def symmetric(y: np.ndarray, num_classes: int, picked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (y[picked] + rng.integers(1, num_classes, size=len(picked))) % num_classes


def pair(y: np.ndarray, num_classes: int, picked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (y[picked] + 1) % num_classes


NOISE_KINDS: dict[str, NoiseKind] = {"symmetric": symmetric, "pair": pair}
MAX_SHARE = {"pair": 0.5}  # at or above it the flipped class outnumbers the true one


@checks(DataConfig)
def _check_noise_kind(cfg: DataConfig) -> None:
    one_of("data.label_noise_kind", cfg.label_noise_kind, list(NOISE_KINDS))
    top = MAX_SHARE.get(cfg.label_noise_kind, 1)
    check(cfg.label_noise < top, f"data.label_noise must be below {top} for {cfg.label_noise_kind} noise (at "
          f"{top} the flipped class outnumbers the true one), got {cfg.label_noise}")


def flip_labels(y: np.ndarray, num_classes: int, share: float, seed: int, kind: str = "symmetric") -> np.ndarray:
    """``y`` with ``round(share * len(y))`` labels, drawn at random (seeded), replaced by ``kind``."""
    rng = np.random.default_rng(seed + 7919)
    y = y.copy()
    picked = rng.choice(len(y), size=int(round(share * len(y))), replace=False)
    y[picked] = NOISE_KINDS[kind](y, num_classes, picked, rng)
    return y
