"""Choosing the teacher: the policy registry, ``choose`` and ``top_k``, the selection context.

The trajectory of most tests is ``trained_run`` (mlp_xs on digits, a checkpoint after each of
3 epochs); policies that only read epochs run on hand-made checkpoints.
"""
import ast
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ckptkd import Checkpoint, CkptkdError, DataConfig, InfoConfig, RunConfig, StageConfig, load_dataset
from ckptkd.cli import main
from ckptkd.config import KDConfig, ProxyConfig, SelectConfig, from_dict
from ckptkd.select import (POLICIES, Policy, SelectionContext, choose, get_policy, policy_scores, register, top_k)
from ckptkd.select.temperature import fit_temperature, nll

# ---------------------------------------------------------------- policies that read only epochs


def _trajectory(epochs=(2, 4, 6, 8, 10)):
    return [Checkpoint(Path(f"epoch_{e:04d}.safetensors"), e) for e in epochs]


def _epochs(ckpts):
    return [c.epoch for c in ckpts]


def test_choose_last():
    assert _epochs(choose("last", _trajectory())) == [10]


def test_choose_halfway_takes_the_earlier_on_a_tie():
    assert _epochs(choose("halfway", _trajectory())) == [4]  # 4 and 6 are both 1 from 5
    assert _epochs(choose("halfway", _trajectory((3, 6, 9, 12)))) == [6]


def test_k_works_for_epoch_policies_too():
    assert _epochs(choose("last", _trajectory(), k=2)) == [8, 10]
    assert _epochs(choose("halfway", _trajectory(), k=3)) == [2, 4, 6]  # nearest 5; 2 and 8 tie, the earlier wins
    assert _epochs(choose("last", _trajectory(), k=2, min_spacing=4)) == [6, 10]


def test_choose_explicit_epochs():
    assert _epochs(choose("explicit", _trajectory(), epochs=[8, 4])) == [4, 8]


def test_explicit_without_epochs_is_refused():
    with pytest.raises(CkptkdError, match="policy explicit needs the epochs"):
        choose("explicit", _trajectory())


def test_explicit_epoch_that_was_not_saved():
    with pytest.raises(CkptkdError, match=r"no checkpoint at epoch 5.*\[2, 4, 6, 8, 10\]"):
        choose("explicit", _trajectory(), epochs=[4, 5])


def test_unknown_policy_suggests_the_closest():
    with pytest.raises(CkptkdError, match="did you mean 'halfway'"):
        choose("halfwya", _trajectory())
    with pytest.raises(CkptkdError, match="did you mean 'best-val'"):
        get_policy("bset-val")


# ---------------------------------------------------------------- scores given by the caller (Algorithm 1's)

SCORES = [0.1, 0.9, 0.8, 0.2, 0.5]


def test_choose_mi_takes_the_top_score():
    assert _epochs(choose("mi", _trajectory(), scores=SCORES)) == [4]


def test_choose_mi_ensemble_respects_min_spacing():
    assert _epochs(choose("mi", _trajectory(), scores=SCORES, k=2)) == [4, 6]
    assert _epochs(choose("mi", _trajectory(), scores=SCORES, k=2, min_spacing=4)) == [4, 10]


def test_choose_mi_ensemble_never_paints_itself_into_a_corner():
    # epochs 2..10; the best (6) leaves no pair 6 epochs apart, so the best feasible pair is taken
    assert _epochs(choose("mi", _trajectory(), scores=[0.1, 0.2, 0.9, 0.3, 0.4], k=2, min_spacing=6)) == [4, 10]
    assert _epochs(choose("mi", _trajectory(), scores=[0.1, 0.2, 0.9, 0.3, 0.4], k=3, min_spacing=4)) == [2, 6, 10]


def test_choose_mi_cannot_space_too_many():
    with pytest.raises(CkptkdError, match="cannot pick 3"):
        choose("mi", _trajectory(), scores=SCORES, k=3, min_spacing=5)


def test_ties_go_to_the_later_epoch():
    assert _epochs(choose("best-val", _trajectory(), scores=[0.5, 0.9, 0.7, 0.9, 0.8])) == [8]


def test_a_policy_that_needs_inputs_refuses_without_a_context():
    with pytest.raises(CkptkdError, match="policy mi needs a SelectionContext"):
        choose("mi", _trajectory())


# ---------------------------------------------------------------- unions a+b


def test_halfway_plus_last_is_an_ensemble_of_two():
    assert _epochs(choose("halfway+last", _trajectory())) == [4, 10]


def test_a_union_passes_k_to_every_part():
    # mi's top 3 are 4, 6, 10; last's top 3 are 6, 8, 10: never fewer than k from a part
    picks = choose("mi+last", _trajectory(), k=3, scores=SCORES)
    assert _epochs(picks) == [4, 6, 8, 10]
    assert _epochs(choose("mi+last", _trajectory(), k=3, scores={"mi": SCORES})) == [4, 6, 8, 10]


def test_explicit_in_a_union_works_at_k_1_only():
    assert _epochs(choose("explicit+last", _trajectory(), epochs=[2])) == [2, 10]
    with pytest.raises(CkptkdError, match="ambiguous"):
        choose("explicit+last", _trajectory(), k=2, epochs=[2])


def test_a_part_named_twice_is_refused():
    with pytest.raises(CkptkdError, match="names 'last' twice"):
        choose("last+halfway+last", _trajectory())


def test_config_validation_reads_the_registry():
    assert from_dict(RunConfig, {"select": {"policy": "val-nll+last", "k": 2}}).select.policy == "val-nll+last"
    with pytest.raises(CkptkdError, match=r"select.policy must be one of last, halfway, .*proxy.*\(did you mean"):
        from_dict(RunConfig, {"select": {"policy": "mi-vall"}})
    with pytest.raises(CkptkdError, match="ambiguous"):
        from_dict(RunConfig, {"select": {"policy": "explicit+mi", "checkpoints": [2], "k": 2}})


def test_a_new_policy_is_one_registered_class():
    @register
    class Earliest(Policy):
        name, summary = "earliest-test-only", "the first checkpoint"

        def scores(self, ckpts, ctx):
            return [-c.epoch for c in ckpts]

    try:
        assert from_dict(RunConfig, {"select": {"policy": "earliest-test-only"}}).select.policy == "earliest-test-only"
        assert _epochs(choose("earliest-test-only+last", _trajectory(), k=2)) == [2, 4, 8, 10]
    finally:
        del POLICIES["earliest-test-only"]



def test_one_builder_puts_a_selection_together(digits, tmp_path):
    """``SelectionContext.from_config`` maps the config sections onto the context, and it is the
    only place in the package that constructs one (the pipeline, the CLI and studies call it)."""
    select = SelectConfig(proxy=TINY_PROXY)
    ctx = SelectionContext.from_config(digits, tmp_path, select=select, info=TINY_INFO, student=TINY_STUDENT,
                                       kd=KDConfig(alpha=0.5), seed=3, device="cpu")
    assert (ctx.proxy_cfg, ctx.info, ctx.student, ctx.kd.alpha, ctx.seed, ctx.folder) == (
        TINY_PROXY, TINY_INFO, TINY_STUDENT, 0.5, 3, tmp_path)
    bare = SelectionContext.from_config(digits, None)
    assert (bare.proxy_cfg, bare.info, bare.student, bare.kd, bare.seed) == (ProxyConfig(), InfoConfig(), None, None, 0)
    package = Path(__file__).resolve().parent.parent / "ckptkd"
    built_in = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == "SelectionContext") or (
                        isinstance(f, ast.Attribute) and f.attr == "SelectionContext"):
                    built_in.add(path.relative_to(package).as_posix())
    assert built_in == {"select/context.py"}

# ---------------------------------------------------------------- temperature scaling


def test_fitted_temperature_matches_the_closed_form():
    # two classes, logits (a, 0) for every sample, a share p of labels 0: the NLL is smallest
    # where sigmoid(a / T) = p, i.e. T = a / logit(p)
    a, p, n = 4.0, 0.8, 1000
    logits = torch.tensor([[a, 0.0]] * n)
    y = torch.tensor([0] * int(p * n) + [1] * (n - int(p * n)))
    t, at_t = fit_temperature(logits, y)
    assert t == pytest.approx(a / math.log(p / (1 - p)), rel=1e-4)
    assert at_t == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), rel=1e-6)
    assert at_t < nll(logits, y, 1.0)


# ---------------------------------------------------------------- every policy on a real trajectory

TINY_INFO = InfoConfig(probe_size=100)
TINY_STUDENT = StageConfig(model="mlp_xs", epochs=2, batch_size=64)
TINY_PROXY = ProxyConfig(epoch_fraction=0.5, data_fraction=0.5)
SCORED = [p for p in POLICIES if p != "explicit"]


def _ctx(data, folder=None):
    return SelectionContext(data, folder=folder, info=TINY_INFO, student=TINY_STUDENT, proxy=TINY_PROXY)


@pytest.fixture(scope="module")
def clean_picks(trained_run, digits, tmp_path_factory):
    """Every policy's scores and picks (k = 1 and 2), computed once with clean data."""
    ctx = _ctx(digits, tmp_path_factory.mktemp("clean"))
    ckpts = trained_run.checkpoints()
    return {p: (policy_scores(p, ckpts, ctx), _epochs(choose(p, ckpts, ctx)), _epochs(choose(p, ckpts, ctx, k=2)))
            for p in SCORED}


def test_k_works_with_every_policy(clean_picks):
    for name, (scores, one, two) in clean_picks.items():
        assert len(scores) == 3 and all(math.isfinite(s) for s in scores), name
        assert len(one) == 1 and len(two) == 2 and set(one) <= set(two), name


class _Poison:
    """A stand-in for the test split that fails any use of it."""

    def __getattr__(self, name):
        raise AssertionError(f"selection read the test split (.{name})")

    def __len__(self):
        raise AssertionError("selection read the test split (len)")

    def __getitem__(self, i):
        raise AssertionError("selection read the test split (indexing)")


@pytest.mark.parametrize("how", ["raises", "shuffled", "empty"])
def test_selection_never_reads_the_test_split(how, clean_picks, trained_run, digits, tmp_path):
    if how == "raises":
        x_test, y_test = _Poison(), _Poison()
    elif how == "shuffled":
        g = torch.Generator().manual_seed(0)
        x_test = torch.full_like(digits.x_test, float("nan"))
        y_test = digits.y_test[torch.randperm(len(digits.y_test), generator=g)]
    else:
        x_test, y_test = digits.x_test[:0], digits.y_test[:0]
    poisoned = dataclasses.replace(digits, x_test=x_test, y_test=y_test)
    ctx = _ctx(poisoned, tmp_path)  # a fresh folder: everything is computed again
    ckpts = trained_run.checkpoints()
    for name, (scores, one, two) in clean_picks.items():
        assert policy_scores(name, ckpts, ctx) == pytest.approx(scores, abs=1e-9), name
        assert _epochs(choose(name, ckpts, ctx)) == one, name
        assert _epochs(choose(name, ckpts, ctx, k=2)) == two, name


@pytest.fixture(scope="module")
def no_val(tmp_path_factory):
    return load_dataset(DataConfig(spec="digits", val_fraction=0))


@pytest.mark.parametrize("name", [p for p in SCORED if "val" in POLICIES[p].needs or p.endswith("-val")])
def test_policies_that_need_val_refuse_without_it(name, no_val, trained_run):
    with pytest.raises(CkptkdError, match=f"policy {name} needs a validation split; set data.val_fraction > 0"):
        choose(name, trained_run.checkpoints(), _ctx(no_val))


def test_val_metrics_are_cached_with_their_cost(trained_run, digits, tmp_path):
    ckpts = trained_run.checkpoints()
    first = _ctx(digits, tmp_path)
    cost = get_policy("val-nll").cost_s(ckpts, first)
    cache = (tmp_path / "selection-cache.json").read_bytes()
    records = json.loads(cache)
    assert len(records) == 3 and cost == pytest.approx(sum(r["wall_s"] for r in records.values())) and cost > 0
    again = _ctx(digits, tmp_path)  # a new context on the same folder reads the records back
    assert get_policy("best-val").cost_s(ckpts, again) == cost
    assert (tmp_path / "selection-cache.json").read_bytes() == cache
    m = again.val_metrics(ckpts[-1])
    assert m["val_acc"] == pytest.approx(ckpts[-1].meta["val_acc"])  # what fit recorded
    assert m["val_nll_ts"] <= m["val_nll"] + 1e-12 and m["temperature"] > 0
    assert get_policy("last").cost_s(ckpts, again) == get_policy("halfway").cost_s(ckpts, None) == 0


def test_proxy_full_trains_each_proxy_for_all_the_student_epochs_on_one_nth_of_the_data(trained_run, digits, tmp_path):
    ctx = _ctx(digits, tmp_path)
    ckpts = trained_run.checkpoints()
    scores = policy_scores("proxy-full", ckpts, ctx)
    records = [r for r in json.loads((tmp_path / "selection-cache.json").read_text()).values() if r["kind"] == "proxy"]
    assert [r["epochs"] for r in records] == [TINY_STUDENT.epochs] * 3  # the student's, not a fraction of them
    assert [r["n_train"] for r in records] == [round(len(digits.y_train) / 3)] * 3
    assert scores == [r["val_acc"] for r in sorted(records, key=lambda r: r["epoch"])]
    short = [ctx.proxy(c) for c in ckpts]  # policy proxy: its own fractions (TINY_PROXY), its own records
    assert {r["epochs"] for r in short} == {1} and {r["n_train"] for r in short} == {round(len(digits.y_train) / 2)}


def test_proxy_full_refuses_when_its_share_of_the_data_holds_fewer_samples_than_classes(trained_run, digits):
    few = dataclasses.replace(digits, x_train=digits.x_train[:25], y_train=digits.y_train[:25])
    with pytest.raises(CkptkdError, match=r"policy proxy-full gives each of the 3 candidates 1/3 of the 25 training "
                                          r"samples, fewer than one per class; save fewer checkpoints"):
        policy_scores("proxy-full", trained_run.checkpoints(), _ctx(few))


def test_mi_val_draws_its_probe_from_the_validation_split(trained_run, digits, tmp_path):
    ctx = _ctx(digits, tmp_path)
    ckpts = trained_run.checkpoints()
    train_rows, val_rows = ctx.analysis(ckpts), ctx.analysis(ckpts, split="val")
    assert [r["ixf"] for r in train_rows] != [r["ixf"] for r in val_rows]
    assert (tmp_path / "analysis.json").exists() and (tmp_path / "analysis-val.json").exists()
    assert policy_scores("mi-val", ckpts, ctx) == [r["score"] for r in val_rows]
    assert policy_scores("iyf", ckpts, ctx) == [r["iyf"] for r in train_rows]
    assert get_policy("mi").cost_s(ckpts, ctx) == pytest.approx(sum(r["wall_s"] for r in train_rows))


def test_policies_command_lists_every_policy(capsys):
    assert main(["policies"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(POLICIES)
    assert {"last", "halfway", "best-val", "val-nll", "mi", "mi-val", "iyf", "proxy"} <= set(listed)


def test_select_command_works_with_every_policy_and_k(run_copy, capsys):
    for name in ("best-val", "val-nll", "iyf-val", "halfway+last"):
        probe = ["--probe-size", "100"] if name == "iyf-val" else []  # the others read no estimate: refused
        code = main(["select", str(run_copy.path), "--policy", name, "-k", "2", *probe, "--json", "--quiet"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        out = json.loads(captured.out)
        assert code == 0 and len(out["chosen"]) >= 2, name
        assert all(len(p["ranking"]) == 3 and p["cost_s"] >= 0 for p in out["parts"]), name


def test_top_k_and_choose_agree(trained_run, digits):
    ctx = _ctx(digits)
    ckpts = trained_run.checkpoints()
    assert choose("val-nll", ckpts, ctx, k=2) == top_k(ckpts, policy_scores("val-nll", ckpts, ctx), 2)


def test_val_nll_1se_ties_what_the_validation_split_cannot_tell_apart_and_gives_ties_to_the_later():
    from types import SimpleNamespace

    from ckptkd.select.policies.validation import ValNLL1SE

    class Ctx:  # per-sample NLLs by hand; the policy reads nothing else
        def __init__(self, samples):
            self.samples = samples

        def require_val(self, who):
            pass

        def val_metrics(self, c):
            return {"nll_ts_samples": self.samples[c.epoch]}

    ckpts = [SimpleNamespace(epoch=e) for e in (1, 2, 3)]
    # epoch 1 is best by 0.01 nats, a difference whose paired standard error is 0.05: a tie
    noisy = {1: [1.0, 2.0, 0.0, 1.0] * 25, 2: [2.0, 1.0, 1.0, 0.04] * 25, 3: [1.5, 1.5, 0.5, 0.54] * 25}
    scores = ValNLL1SE().scores(ckpts, Ctx(noisy))
    assert scores[0] == 0.0 and scores[2] == 0.0  # epoch 3 is tied with the best
    assert [c.epoch for c in top_k(ckpts, scores, 1)] == [3]  # and ties go to the later checkpoint
    # the same mean gap with no spread is a real difference: the best one is picked
    clear = {1: [1.0] * 100, 2: [1.2] * 100, 3: [1.01] * 100}
    scores = ValNLL1SE().scores(ckpts, Ctx(clear))
    assert scores == pytest.approx([0.0, -0.2, -0.01]) and [c.epoch for c in top_k(ckpts, scores, 1)] == [1]
