"""Policy ``knn-student``: a cheap student of the teacher's training outputs, scored on validation.

Reads every checkpoint's outputs on the training inputs (``ctx.train_outputs``), the raw
training and validation inputs (for the neighbours) and the validation labels (for the
score); never the test split.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch

from ...config import KDConfig
from ..base import Policy, register
from ..records import tensor_record
from ..trainset import one_se_scores

CHUNK_ELEMENTS = 1 << 25  # distances (float32) held at once: 128 MB, whatever the split sizes
FOLDER_NAME = "knn-neighbours"  # in the context's cache folder, next to train-outputs/
VERSION = 1  # a change to the feature space or the metric gets a new key, never a stale record

# The neighbours depend on the inputs alone, so each context finds them once, for every
# checkpoint and every call (scores, cost_s, evidence): ``ckptkd.select.records``.


def default_k(n_train: int) -> int:
    """k = ceil(sqrt(N)), capped at N: k -> infinity and k / N -> 0 as N grows, the condition
    under which k-NN regression is consistent (Stone, Ann. Statist. 1977)."""
    return max(1, min(n_train, math.ceil(math.sqrt(n_train))))


def kd_temperature(ctx) -> float:
    """The temperature the real student's KD target uses: ``ctx.kd.temperature``, or
    ``KDConfig``'s default (4) when the context carries no KD settings (``ckptkd select``
    without a config)."""
    kd = getattr(ctx, "kd", None)
    return float((kd or KDConfig()).temperature)


def _rows(x, chunk: int):
    """(start, float64 (m, D) block) over the rows of ``x``, a tensor or ``ImageFiles``
    (whose slices are decoded on demand), ``chunk`` rows at a time."""
    for a in range(0, len(x), chunk):
        block = torch.as_tensor(x[a:a + chunk])
        yield a, block.reshape(len(block), -1).double()


def feature_scaling(x_train) -> tuple[torch.Tensor, torch.Tensor]:
    """Per flattened feature, the training split's mean and 1 / std (population std), with
    1 / std = 0 for a feature that is constant on the training split, so that it is 0 for
    every input (it cannot tell training inputs apart). Chunks are merged with Chan et al.'s
    pairwise update, so a streamed image folder is read once."""
    n, mean, m2, lo, hi = 0, None, None, None, None
    for _, block in _rows(x_train, 4096):
        b_n, b_mean = len(block), block.mean(0)
        b_m2 = ((block - b_mean) ** 2).sum(0)
        if mean is None:
            n, mean, m2, lo, hi = b_n, b_mean, b_m2, block.min(0).values, block.max(0).values
            continue
        delta, total = b_mean - mean, n + b_n
        mean = mean + delta * b_n / total
        m2 = m2 + b_m2 + delta ** 2 * n * b_n / total
        lo, hi, n = torch.minimum(lo, block.min(0).values), torch.maximum(hi, block.max(0).values), total
    std = (m2 / n).sqrt()
    inv = torch.where(hi > lo, 1.0 / std.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(std))
    return mean, inv


def nearest_training_inputs(x_train, x_val, k: int, device="cpu") -> torch.Tensor:
    """(N_val, k) indices of each validation input's k nearest training inputs, nearest first,
    by Euclidean distance between inputs flattened and standardised with the training split's
    statistics (``feature_scaling``). The training rows are streamed in chunks against all
    validation rows, keeping a running top k, so no N_val x N_train matrix is ever held;
    equal distances go to the lower training index (a stable sort), so the answer does not
    depend on the chunking."""
    mean, inv = feature_scaling(x_train)
    val = torch.cat([((b - mean) * inv).float() for _, b in _rows(x_val, 4096)]).to(device)
    n_val = len(val)
    best_d = torch.full((n_val, 0), float("inf"), device=device)
    best_i = torch.zeros((n_val, 0), dtype=torch.int64, device=device)
    chunk = max(k, CHUNK_ELEMENTS // max(1, n_val))
    for a, block in _rows(x_train, chunk):
        train = ((block - mean) * inv).float().to(device)
        d = torch.cdist(val, train)
        cand_d = torch.cat([best_d, d], 1)
        cand_i = torch.cat([best_i, torch.arange(a, a + len(train), device=device).expand(n_val, -1)], 1)
        order = cand_d.sort(dim=1, stable=True).indices[:, :k]
        best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
    return best_i.cpu()


def knn_predictions(targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(N_val, C): per validation input, the mean of ``targets`` (N_train, C) over its
    neighbours ``index`` (N_val, k): the k-NN regression of the targets."""
    rows = max(1, CHUNK_ELEMENTS // max(1, index.shape[1] * targets.shape[1]))
    return torch.cat([targets[index[a:a + rows]].mean(1) for a in range(0, len(index), rows)])


def neighbours_key(fingerprint: str | None, k: int, n_train: int, n_val: int) -> str:
    """The sha256 that names a neighbours record: the data fingerprint (which covers both
    splits' inputs), k, the split sizes and the feature space's version."""
    settings = {"k": k, "n_train": n_train, "n_val": n_val, "features": "raw, standardised on train",
                "metric": "euclidean", "version": VERSION}
    return hashlib.sha256(json.dumps([FOLDER_NAME, fingerprint, settings], sort_keys=True).encode()).hexdigest()


def neighbours(ctx, k: int | None = None) -> dict:
    """{"index": (N_val, k), "k", "wall_s"}: the validation inputs' nearest training inputs, found
    once per context, data fingerprint and k, and kept in FOLDER/knn-neighbours/
    (``ckptkd.select.records``)."""
    data = ctx.data
    n_train, n_val = len(data.y_train), len(data.y_val)
    k = default_k(n_train) if k is None else max(1, min(int(k), n_train))
    key = neighbours_key(getattr(data, "fingerprint", None), k, n_train, n_val)
    return {"k": k, **tensor_record(
        ctx, FOLDER_NAME, key,
        lambda: {"index": nearest_training_inputs(data.x_train, data.x_val, k, getattr(ctx, "device", "cpu"))},
        valid=lambda t: tuple(t["index"].shape) == (n_val, k))}


@register
class KNNStudent(Policy):
    """How well a cheap student of the teacher's training outputs does on held-out data.

    **Why.** The student learns the teacher's softened outputs on the *training* inputs, and
    that is where a teacher that memorises flipped labels does its harm; a policy that scores
    the teacher on validation inputs cannot see it (issue 19). So a stand-in student is fitted
    to exactly those targets and judged where the real one is: on the validation split.

    **The student.** k-nearest-neighbour regression (Fix & Hodges 1951; Cover & Hart, IEEE
    Trans. Inf. Theory 1967) of the targets P_c = softmax(z_c / T) of checkpoint c on the
    training inputs: for a validation input v, q_c(v) is the mean of P_c over v's k nearest
    training inputs. Every setting is fixed on principle, none on a study:

    - T is the temperature the real student's KD target uses (``ctx.kd.temperature``; 4, the
      ``KDConfig`` default, when the context has no KD settings), so the student averages what
      the real student would be taught.
    - The features are the raw inputs, flattened and standardised per feature with the
      training split's mean and std (a constant feature is 0), with Euclidean distance: the
      same space for every checkpoint, so the neighbours depend on the data alone and any
      difference between checkpoints comes from their targets. (A checkpoint's own features
      would make the student a function of the teacher twice over.)
    - k = ceil(sqrt(N_train)), capped at N_train: the textbook consistent choice (k -> inf,
      k / N -> 0; Stone 1977), not a tuned one.

    **Score.** Per validation sample, 1[argmax q_c(v) == y_v], the student's accuracy. Not its
    NLL: the validation labels carry the same noise as the training labels, and under pair
    noise the NLL is minimised by the noisy posterior, rewarding a teacher that reproduces the
    noise transition, while the argmax of the noisy posterior is still the true class below
    50% noise. Checkpoints whose mean correctness is within one standard error (paired over
    the validation samples) of the best are tied, and ties go to the later one
    (``one_se_scores``, the rule of ``val-nll-1se`` and ``aum-fit``). An exact tie in q's
    argmax goes to the lower class index (``torch.argmax``).

    **Cost.** The training-set pass that ``aum-fit`` reads (one forward pass per checkpoint,
    shared records), plus one k-NN query of the validation inputs against the training
    inputs, computed once for all checkpoints, kept in FOLDER/knn-neighbours/ with its wall
    time, and counted once in ``cost_s``. No gradient step: 0 distillations.

    **Known weakness.** A k-NN student averages k neighbours' targets, and so washes out the
    scattered flipped labels that a memorising teacher repeats, which a parametric student of
    enough capacity fits; it then ties a memorising late teacher with an earlier one and,
    ties going later, may be biased toward late teachers. It sees the harm only where the
    memorised labels cluster in input space (at least about k of them together). Raw-input
    distances are also a poor metric on images. Measured in docs/selection.md.
    """

    name, needs = "knn-student", ("train", "val")
    summary = ("a k-NN student (k = ceil(sqrt N)) of the teacher's softened training outputs, its validation "
               "accuracy; 1-SE ties to later")

    def correctness(self, ckpts, ctx, k: int | None = None) -> list[torch.Tensor]:
        """Per checkpoint, per validation sample, 1.0 where the k-NN student is right."""
        ctx.require_val(f"policy {self.name}")
        index = neighbours(ctx, k)["index"]
        temperature, y = kd_temperature(ctx), ctx.data.y_val
        return [(self.predictions(ctx.train_outputs(c)["logits"], index, temperature).argmax(1) == y).double()
                for c in ckpts]

    @staticmethod
    def predictions(logits: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
        """q_c on the validation inputs: the neighbours' mean of softmax(logits / T)."""
        return knn_predictions(torch.softmax(logits.double() / temperature, 1), index)

    def scores(self, ckpts, ctx):
        return one_se_scores(self.correctness(ckpts, ctx))

    def cost_s(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        return sum(ctx.train_outputs(c)["wall_s"] for c in ckpts) + neighbours(ctx)["wall_s"]

    def evidence(self, ckpts, ctx):
        from ..confidence import Evidence

        return Evidence(self.correctness(ckpts, ctx), "points of kNN-student validation accuracy",
                        "validation samples", scale=100.0)
