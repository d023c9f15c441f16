"""Label noise: ``data.label_noise`` of the training (and validation) labels are replaced,
seeded, before anything trains. The test labels are never touched.

Each kind is a ``NoiseKind``, registered by name in ``NOISE_KINDS`` (``data.label_noise_kind``).
Exactly ``round(share * N)`` labels change, whatever the kind:

- ``symmetric``: uniformly drawn samples go to a uniformly drawn *other* class, the noise of
  most KD-under-noise papers.
- ``pair``: uniformly drawn samples go to the next class, ``(y + 1) mod C`` ("pairflip", Han
  et al., Co-teaching, NeurIPS 2018). Structured noise: a teacher that memorises it learns a
  systematic confusion between neighbouring classes, which a student then inherits. Below a
  share of 0.5 the true class still outnumbers the flipped one in every class.
- ``instance``: instance-dependent noise, whose flip probability depends on the sample (see
  ``instance``). The two above are class-conditional: given its class, every sample is as
  likely to flip as any other, which real annotators' mistakes are not (Chen et al., "Beyond
  class-conditional assumption: a primary attempt to combat instance-dependent label noise",
  AAAI 2021, test this on real noisy data and reject it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import numpy as np

from ..config import DataConfig, check, checks, one_of

# The inputs of the labels ``y``, in their order: an array (N, ...), or a function that yields
# them as row chunks (image files, decoded batch by batch), called once per pass over them.
Inputs = Union[np.ndarray, Callable[[], Iterable[np.ndarray]]]
# (y, num_classes, count, rng, inputs or None) -> (the ``count`` samples picked, their new labels)
Flip = Callable[[np.ndarray, int, int, np.random.Generator, Optional[Inputs]], tuple[np.ndarray, np.ndarray]]
Relabel = Callable[[np.ndarray, int, np.ndarray, np.random.Generator], np.ndarray]

ROWS_PER_CHUNK = 4096  # an array's rows standardised and projected at a time: float64 copies stay small
FLOOR = 1e-12  # a weight never below it, so that rng.choice always has enough samples (and classes) to draw


@dataclass(frozen=True)
class NoiseKind:
    flip: Flip
    needs_inputs: bool = False  # the flips read the samples' inputs, not the labels alone
    max_share: float = 1.0  # data.label_noise must be below it (1: its range, checked by the config)
    why_max: str = "the flipped class outnumbers the true one"  # what goes wrong at max_share


def symmetric(y: np.ndarray, num_classes: int, picked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (y[picked] + rng.integers(1, num_classes, size=len(picked))) % num_classes


def pair(y: np.ndarray, num_classes: int, picked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (y[picked] + 1) % num_classes


def uniformly_picked(relabel: Relabel) -> Flip:
    """Class-conditional noise: ``count`` samples drawn uniformly, then relabelled by ``relabel``
    (the draws, in this order, that symmetric and pair noise have always made: their labels,
    and so every fingerprint and cache keyed on them, stay what they were)."""
    def flip(y, num_classes, count, rng, inputs=None):
        picked = rng.choice(len(y), size=count, replace=False)
        return picked, relabel(y, num_classes, picked, rng)
    return flip


def _row_chunks(inputs: Inputs) -> Callable[[], Iterable[np.ndarray]]:
    if callable(inputs):
        return inputs
    x = np.asarray(inputs)
    return lambda: (x[i:i + ROWS_PER_CHUNK] for i in range(0, len(x), ROWS_PER_CHUNK))


def _flat(chunk) -> np.ndarray:
    return np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)


def feature_stats(chunks: Callable[[], Iterable[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the flattened inputs, in one pass over the chunks (their
    moments merged as in Chan, Golub and LeVeque's pairwise update): no float64 copy of the
    whole set. A constant feature gets std 0 exactly (its chunks' squared deviations are 0)."""
    n, mean, m2 = 0, None, None
    for chunk in map(_flat, chunks()):
        k = len(chunk)
        if not k:
            continue
        c_mean = chunk.mean(axis=0)
        c_m2 = ((chunk - c_mean) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2 = k, c_mean, c_m2
            continue
        delta, total = c_mean - mean, n + k
        mean = mean + delta * (k / total)
        m2 = m2 + c_m2 + delta ** 2 * (n * k / total)
        n = total
    return mean, np.sqrt(m2 / n)


def projection_scores(inputs: Inputs, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """softmax(x̃ W / sqrt(d)) per sample: x̃ the inputs flattened to d features and standardised
    per feature (a constant feature stays 0), W ~ N(0, 1) of shape (d, num_classes) from ``rng``.
    The random projection of the inputs is the instance-dependent generator of Xia et al.
    ("Part-dependent label noise: towards instance-dependent label noise", NeurIPS 2020, whose
    synthetic IDN scores each sample's other classes with a random Gaussian projection of its
    features, one projection per true class; here one for all). The standardisation makes no
    feature dominate by its units alone, and the sqrt(d) keeps the scores of order 1 whatever
    the number of features."""
    chunks = _row_chunks(inputs)
    mean, std = feature_stats(chunks)
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    w = rng.standard_normal((len(mean), num_classes))
    z = np.concatenate([((c - mean) * scale) @ w for c in map(_flat, chunks())]) / np.sqrt(len(mean))
    z -= z.max(axis=1, keepdims=True)
    s = np.exp(z)
    return s / s.sum(axis=1, keepdims=True)


def instance(y: np.ndarray, num_classes: int, count: int, rng: np.random.Generator,
             inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """Instance-dependent noise: a sample's chance to flip depends on its inputs.

    ``s = projection_scores(...)`` gives each sample class scores from its inputs; its flip
    weight is ``q = 1 - s[y]``, so the samples the projection finds ambiguous for their own
    class flip more often, as harder, more ambiguous samples are the ones annotators get wrong
    (Chen et al., AAAI 2021, whose IDN flips the samples a trained network finds most confusable
    with another class; Xia et al. instead draw each sample's flip rate from a truncated normal,
    independent of the sample). ``count`` samples are drawn without replacement with probability
    proportional to q, so the share is exact, as for the other kinds; each goes to another class
    drawn from its scores ``s`` renormalised over the classes other than its own, as Xia et al.
    send a flip to the classes its projection favours. The old class has weight 0, so it is
    never kept.
    """
    s = projection_scores(inputs, num_classes, rng)
    # floored: a sample (or class) the projection is certain of still has a weight, so that
    # rng.choice always finds ``count`` samples; all weights at the floor is the uniform choice
    q = np.maximum(1.0 - s[np.arange(len(y)), y], FLOOR)
    picked = rng.choice(len(y), size=count, replace=False, p=q / q.sum())
    others = np.maximum(s[picked], FLOOR)
    others[np.arange(count), y[picked]] = 0.0
    cdf = np.cumsum(others, axis=1)
    # inverse CDF against the row's own total (never 1 - rounding): the first class whose
    # cumulative weight passes u; the old class adds 0 to the sum, so it cannot be that class
    u = rng.random(count)[:, None] * cdf[:, -1:]
    return picked, (cdf > u).argmax(axis=1)


NOISE_KINDS: dict[str, NoiseKind] = {
    "symmetric": NoiseKind(uniformly_picked(symmetric)),
    "pair": NoiseKind(uniformly_picked(pair), max_share=0.5),
    # below 1 (data.label_noise's own range), not 0.5 like pair: a class's flips are spread over the
    # classes its samples' projections favour, not sent to one, so no flipped class need outnumber
    # the true one; at 1 every sample would flip, and who flips would no longer depend on the sample
    "instance": NoiseKind(instance, needs_inputs=True),
}


@checks(DataConfig)
def _check_noise_kind(cfg: DataConfig) -> None:
    one_of("data.label_noise_kind", cfg.label_noise_kind, list(NOISE_KINDS))
    kind = NOISE_KINDS[cfg.label_noise_kind]
    top = f"{kind.max_share:g}"
    check(cfg.label_noise < kind.max_share, f"data.label_noise must be below {top} for {cfg.label_noise_kind} "
          f"noise (at {top} {kind.why_max}), got {cfg.label_noise}")


def flip_labels(y: np.ndarray, num_classes: int, share: float, seed: int, kind: str = "symmetric",
                x: Inputs | None = None) -> np.ndarray:
    """``y`` with ``round(share * len(y))`` labels replaced by ``kind`` (seeded); ``x``, the inputs
    of ``y`` in its order, is read only by a kind that needs them (``instance``)."""
    noise = NOISE_KINDS[kind]
    if noise.needs_inputs and x is None:
        raise ValueError(f"{kind} label noise reads the samples' inputs: pass x")
    rng = np.random.default_rng(seed + 7919)
    y = y.copy()
    picked, new = noise.flip(y, num_classes, int(round(share * len(y))), rng, x if noise.needs_inputs else None)
    y[picked] = new
    return y
