"""Policy ``val-nll-knn``: ``val-nll-1se``'s band of ties, broken by what the student will read.

Reads the validation split (the band) and every checkpoint's outputs on the training inputs
(``ctx.train_outputs``) with the training labels of each sample's neighbours (the tie-break);
never the test split.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch

from ..base import Policy, register
from ..records import tensor_record
from ..trainset import one_se_scores
from .validation import nll_margins

MAX_QUERIES = 5000  # training samples whose neighbours vote; the vote reads every training sample


def standardised(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inputs flattened and standardised per feature (a constant feature becomes 0)."""
    return (x.flatten(1).double() - mean) / std


def neighbour_vote(x: torch.Tensor, y: torch.Tensor, num_classes: int, queries: torch.Tensor,
                   k: int | None = None) -> torch.Tensor:
    """For each training sample in ``queries``, the label most of its ``k`` nearest *other*
    training samples carry (Euclidean, in the standardised input space; ties to the lower
    class). ``k`` defaults to ceil(sqrt(N)), the classical consistent choice (k grows with N
    while k / N shrinks), capped at N - 1."""
    n = len(y)
    k = min(n - 1, k or math.ceil(math.sqrt(n)))
    flat = x.flatten(1).double()
    mean, std = flat.mean(0), flat.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    ref = standardised(x, mean, std)
    votes = []
    for start in range(0, len(queries), 512):  # a 512 x N block of distances at a time
        rows = queries[start:start + 512]
        dist = torch.cdist(ref[rows], ref)
        dist[torch.arange(len(rows)), rows] = float("inf")  # a sample is not its own neighbour
        near = dist.topk(k, largest=False).indices
        counts = torch.nn.functional.one_hot(y[near], num_classes).sum(1)
        votes.append(counts.argmax(1))
    return torch.cat(votes) if votes else torch.zeros(0, dtype=torch.long)


def query_indices(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The training samples that vote: all of them up to MAX_QUERIES, else a class-stratified,
    seeded sample of MAX_QUERIES (the cost is queries x N distances)."""
    from ...info.analyze import probe_indices

    return probe_indices(y, MAX_QUERIES, seed)


FOLDER_NAME = "knn-vote"  # in the context's cache folder, next to train-outputs/
VERSION = 1  # a change to the vote gets a new key, never a stale record


def vote_key(fingerprint: str | None, n_train: int) -> str:
    settings = {"n_train": n_train, "max_queries": MAX_QUERIES, "k": "ceil(sqrt(N))", "query_seed": 0,
                "features": "raw, standardised on train", "metric": "euclidean", "version": VERSION}
    return hashlib.sha256(json.dumps([FOLDER_NAME, fingerprint, settings], sort_keys=True).encode()).hexdigest()


def votes_of(ctx) -> dict:
    """{"queries", "labels", "wall_s"}: the vote, computed once per training data and kept in
    FOLDER/knn-vote/ (``ckptkd.select.records``), so its cost reads the same when read back."""
    data = ctx.data
    n = min(len(data.y_train), MAX_QUERIES)

    def compute() -> dict:
        queries = query_indices(data.y_train)
        return {"queries": queries, "labels": neighbour_vote(data.x_train, data.y_train, data.num_classes, queries)}

    return tensor_record(ctx, FOLDER_NAME, vote_key(getattr(data, "fingerprint", None), len(data.y_train)), compute,
                         valid=lambda t: len(t["queries"]) == len(t["labels"]) == n)


def agreement(logits: torch.Tensor, votes: dict) -> torch.Tensor:
    """Per voting training sample, 1 where the checkpoint's prediction is the neighbours' label."""
    return (logits[votes["queries"]].argmax(1) == votes["labels"]).double()


def one_se_band(per_sample_losses: list[torch.Tensor]) -> list[tuple[float, float]]:
    """(d, SE) of every checkpoint against the one with the lowest mean loss, paired over the
    samples, as ``val-nll-1se`` computes them; d <= SE is the band of ties."""
    best = min(range(len(per_sample_losses)), key=lambda i: float(per_sample_losses[i].mean()))
    out = []
    for p in per_sample_losses:
        d = p - per_sample_losses[best]
        out.append((float(d.mean()), float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else 0.0))
    return out


class BandPolicy(Policy):
    """A band of checkpoints the validation split cannot tell apart (one SE of the best
    per-sample validation loss), its ties broken by training-set agreement with the
    neighbours' labels (one SE again), ties to the later checkpoint. Subclasses give the loss."""

    needs = ("val", "train")

    def margins(self, ckpts, ctx) -> list[tuple[float, float]]:
        raise NotImplementedError

    def band(self, ckpts, ctx) -> list[int]:
        ctx.require_val(f"policy {self.name}")
        return [i for i, (d, se) in enumerate(self.margins(ckpts, ctx)) if d <= se]

    def agreements(self, ckpts, ctx) -> list[torch.Tensor]:
        votes = votes_of(ctx)
        return [agreement(ctx.train_outputs(c)["logits"], votes) for c in ckpts]

    def scores(self, ckpts, ctx):
        ctx.require_val(f"policy {self.name}")
        margins = self.margins(ckpts, ctx)
        band = [i for i, (d, se) in enumerate(margins) if d <= se]
        inside = dict(zip(band, one_se_scores(self.agreements([ckpts[i] for i in band], ctx))))
        # agreement scores lie in [-1, 0]; outside the band, below -1 by the loss margin
        return [inside[i] if i in inside else -1.0 - (d - se) - 1e-9 for i, (d, se) in enumerate(margins)]

    def cost_s(self, ckpts, ctx):
        return sum(ctx.train_outputs(c)["wall_s"] for c in ckpts) + votes_of(ctx)["wall_s"]

    def evidence(self, ckpts, ctx):
        from ..confidence import Evidence

        return Evidence(self.agreements(ckpts, ctx), "points of training-set agreement with the neighbours' labels",
                        "training samples", scale=100.0)


@register
class ValNLLNeighbours(BandPolicy):
    """``val-nll-1se``'s band, with its ties broken by the training-set outputs instead of by lateness.

    **Band.** The checkpoints within one standard error of the lowest validation NLL (after
    temperature scaling; paired over the validation samples), exactly ``val-nll-1se``'s ties.
    Held-out data cannot reward memorisation, so nothing outside the band is chosen.

    **Tie-break.** Within the band, the held-out split sees no difference, and the harm of a
    memorising teacher is where the student learns: its outputs on the *training* inputs,
    where it repeats the flipped labels it has memorised (issue 19; on the dev studies the
    teacher's training-set agreement with the clean labels tracked its students). The clean
    labels are unknown, so the reference is the label that most of a training sample's
    k = ceil(sqrt(N)) nearest other training samples carry, in the standardised input space: a
    flipped label is outvoted by its neighbours' labels wherever the noise is below one half
    locally (the principle of editing a training set by its nearest neighbours, Wilson 1972,
    "Asymptotic properties of nearest neighbor rules using edited data", IEEE SMC). Each band
    member scores its agreement with that vote over the training samples (up to MAX_QUERIES of
    them, class-stratified), and members within one standard error (paired over those samples)
    of the best are tied, ties to the later checkpoint, as in ``val-nll-1se``. Checkpoints
    outside the band score below every member, by their NLL margin.

    **Why a tie-break, not a score.** The vote is a poor reference where the raw inputs are a
    poor metric (signals, natural images) or on clean, hard data, where it disagrees with
    correct labels near the class boundaries; used alone it would pull the pick away from a
    late teacher that has rightly learnt them (on the dev studies it did, on clean blobs).
    Inside the band it only chooses among checkpoints the held-out split already finds as
    good, and where the vote tells them apart by less than its own standard error the pick is
    ``val-nll-1se``'s. Nothing here was fitted: one SE twice, and the textbook k.

    **Cost.** ``val-nll``'s validation pass, the training-set pass of ``aum-fit``, and one
    neighbour search of (queries x N) distances; 0 distillations.
    """

    name = "val-nll-knn"
    summary = "val-nll-1se's band of ties, broken by training-set agreement with the neighbours' labels"

    def margins(self, ckpts, ctx):
        return nll_margins(ckpts, ctx)

    def cost_s(self, ckpts, ctx):
        return super().cost_s(ckpts, ctx) + sum(ctx.val_metrics(c)["wall_s"] for c in ckpts)
