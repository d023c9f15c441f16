"""Selection on inputs whose right answer is known in advance: closed forms, brute force, or
arithmetic done by hand in the test. Each test here was written against a break that the
rest of the suite let through (scripts/mutation_check.py names them).
"""
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch

from ckptkd import StageConfig
from ckptkd.cli import main
from ckptkd.config import ProxyConfig
from ckptkd.select import SelectionContext, top_k
from ckptkd.select.context import proxy_data
from ckptkd.select.policies.validation import ValNLL1SE, nll_margins
from ckptkd.select.temperature import T_RANGE, fit_temperature, nll

# ---------------------------------------------------------------- temperature below 1


def test_an_under_confident_teacher_is_sharpened_to_the_closed_form_temperature():
    # two classes, logits (a, 0) for every sample, a share p of labels 0: the NLL is smallest
    # where sigmoid(a / T) = p, i.e. T = a / logit(p). With a = 1 and p = 0.9 the teacher says
    # 73% where 90% is right: T = 1 / ln 9 = 0.455, a sharpening that a search limited to
    # T >= 1 cannot reach (it would stop at T = 1, NLL 0.413 instead of 0.325)
    a, p, n = 1.0, 0.9, 1000
    logits = torch.tensor([[a, 0.0]] * n)
    y = torch.tensor([0] * int(p * n) + [1] * (n - int(p * n)))
    t, at_t = fit_temperature(logits, y)
    assert t == pytest.approx(1 / math.log(9), rel=1e-4) and t < 1
    assert at_t == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), rel=1e-6)
    assert nll(logits, y, 1.0) - at_t > 0.08


def test_the_fitted_temperature_is_the_brute_force_minimum_for_a_multi_class_under_confident_teacher():
    # calibrated logits of 5 classes, then shrunk by 4: the best temperature is near 1/4
    g = torch.Generator().manual_seed(0)
    n, c = 2000, 5
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    shrunk = (logits / 4).float()
    grid = torch.exp(torch.linspace(math.log(T_RANGE[0]), math.log(T_RANGE[1]), 20001, dtype=torch.float64))
    losses = torch.stack([torch.nn.functional.cross_entropy(shrunk.double() / t, y) for t in grid])
    best = float(grid[losses.argmin()])
    t, at_t = fit_temperature(shrunk, y)
    assert 0.2 < best < 0.3  # the brute-force optimum: well below 1
    assert t == pytest.approx(best, rel=1e-3)  # the grid step is 0.05% of T
    assert at_t == pytest.approx(float(losses.min()), abs=1e-7)


# ---------------------------------------------------------------- val-nll-1se pairs its differences


class _HandMadeCtx:
    """Per-sample validation NLLs by hand; ``val-nll-1se`` reads nothing else."""

    def __init__(self, samples: dict[int, list[float]]):
        self.samples = samples

    def require_val(self, who):
        pass

    def val_metrics(self, c):
        return {"nll_ts_samples": self.samples[c.epoch]}


def test_val_nll_1se_pairs_the_samples_so_a_consistent_small_gap_is_no_tie():
    # Epoch 1 is best. Epoch 2 is worse on every sample, by 0.05 or 0.15 nats (mean 0.1), while
    # both checkpoints' NLLs spread over 0 to 2.15 (hard and easy samples).
    # Paired (right): the differences d_j are 0.05, 0.15 alternating, n = 100:
    #   mean 0.1, std sqrt(100 * 0.05^2 / 99) = 0.050252, SE = 0.0050252,
    #   margin d - SE = 0.094975 > 0: epoch 2 is worse, epoch 1 is picked.
    # Unpaired (wrong): var a = var b = 100 * 1^2 / 99 = 1.0101 (plus a little), so
    #   SE = sqrt(2.02 + ...) / 10 = 0.1425 > 0.1: a tie, and ties go to the later epoch 2.
    best = [0.0, 2.0, 0.0, 2.0] * 25
    worse = [b + d for b, d in zip(best, [0.05, 0.15, 0.05, 0.15] * 25)]
    ckpts = [SimpleNamespace(epoch=e) for e in (1, 2)]
    ctx = _HandMadeCtx({1: best, 2: worse})
    (d1, se1), (d2, se2) = nll_margins(ckpts, ctx)
    assert (d1, se1) == (0.0, 0.0)
    assert d2 == pytest.approx(0.1, abs=1e-12)
    assert se2 == pytest.approx(math.sqrt(100 * 0.05**2 / 99) / 10, rel=1e-9)  # 0.0050252
    scores = ValNLL1SE().scores(ckpts, ctx)
    assert scores == pytest.approx([0.0, -(0.1 - 0.0050252)], abs=1e-6)
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [1]


def test_val_nll_1se_pairs_the_samples_so_a_noisy_gap_is_a_tie_even_when_each_checkpoint_is_steady():
    # The other way round: each checkpoint's NLLs barely spread, but they disagree sample by
    # sample. Epoch 1: 1.0, 1.1 alternating; epoch 2: 1.1, 1.01 alternating (mean gap 0.005).
    # Paired: d_j = 0.1, -0.09 alternating: std sqrt(100 * 0.095^2 / 99) = 0.095479,
    #   SE = 0.0095479 > 0.005: a tie, and ties go to the later epoch 2.
    # (Unpaired would give sqrt((0.05^2 + 0.045^2) * 100 / 99) / 10 = 0.0067612: SE is checked exactly.)
    ckpts = [SimpleNamespace(epoch=e) for e in (1, 2)]
    ctx = _HandMadeCtx({1: [1.0, 1.1] * 50, 2: [1.1, 1.01] * 50})
    _, (d2, se2) = nll_margins(ckpts, ctx)
    assert d2 == pytest.approx(0.005, abs=1e-12)
    assert se2 == pytest.approx(math.sqrt(100 * 0.095**2 / 99) / 10, rel=1e-9)
    scores = ValNLL1SE().scores(ckpts, ctx)
    assert scores == [0.0, 0.0] and [c.epoch for c in top_k(ckpts, scores, 1)] == [2]


# ---------------------------------------------------------------- what a selection-cache record is keyed on

TINY_STUDENT = StageConfig(model="mlp_xs", epochs=2, batch_size=64)
TINY_PROXY = ProxyConfig(epoch_fraction=0.5, data_fraction=0.5)


def _proxy_record(data, ckpt, folder, **ctx_args):
    ctx_args = {"student": TINY_STUDENT, "proxy": TINY_PROXY, **ctx_args}
    return SelectionContext(data, folder=folder, **ctx_args).proxy(ckpt)


def _proxy_records(folder):
    return [r for r in json.loads((folder / "selection-cache.json").read_text()).values() if r["kind"] == "proxy"]


@pytest.mark.parametrize("change", [{"seed": 1}, {"student": dataclasses.replace(TINY_STUDENT, model="mlp_s")},
                                    {"proxy": dataclasses.replace(TINY_PROXY, seed=1)}],
                         ids=["seed", "student-model", "proxy-seed"])
def test_a_proxy_result_is_never_served_for_another_seed_or_student(change, trained_run, digits, tmp_path):
    ckpt = trained_run.checkpoints()[-1]
    first = _proxy_record(digits, ckpt, tmp_path)
    other = _proxy_record(digits, ckpt, tmp_path, **change)
    assert len(_proxy_records(tmp_path)) == 2  # a record of its own, the first one kept
    alone = _proxy_record(digits, ckpt, tmp_path / "alone", **change)  # the same settings, computed afresh
    assert {k: other[k] for k in ("val_acc", "val_loss", "model")} == {k: alone[k] for k in ("val_acc", "val_loss",
                                                                                           "model")}
    assert other["model"] == change.get("student", TINY_STUDENT).model
    assert _proxy_record(digits, ckpt, tmp_path) == first  # and the first is served again, not recomputed


def test_proxy_subsets_of_other_seeds_or_fractions_have_other_fingerprints(digits):
    fp = {(f, s): proxy_data(digits, ProxyConfig(data_fraction=f, seed=s)).fingerprint
          for f in (0.5, 0.25) for s in (0, 1)}
    assert len(set(fp.values())) == 4 and digits.fingerprint not in fp.values()
    assert proxy_data(digits, ProxyConfig(data_fraction=0.5, seed=1)).fingerprint == fp[0.5, 1]  # stable
    assert proxy_data(digits, ProxyConfig(data_fraction=1.0, seed=1)).fingerprint == digits.fingerprint  # all of it


def test_select_seed_seeds_the_proxy_student(run_copy, capsys):
    """``select --seed`` acts where a student is trained (policy proxy); elsewhere it is refused
    (tests/test_errors_table.py, select-seed-without-proxy)."""
    def scores(*flags):
        argv = ["select", str(run_copy.path), "--policy", "proxy", "--student-model", "mlp_xs", "--student-epochs",
                "1", "--budget", "3", "--json", "--quiet", *flags]  # proxy: 3 candidates x 1 epoch of 1
        assert main(argv) == 0
        return [r["score"] for r in sorted(json.loads(capsys.readouterr().out)["ranking"], key=lambda r: r["epoch"])]

    default, seed_0, seed_1 = scores(), scores("--seed", "0"), scores("--seed", "1")
    assert default == seed_0  # the run's own seed (0)
    assert seed_1 != seed_0
