"""Known-answer tests for the information estimators (ckptkd.info.estimators)."""
import math
import warnings
from contextlib import contextmanager

import pytest
import torch

from ckptkd.errors import CkptkdError
from ckptkd.info.estimators import (
    InformationSaturationWarning,
    binning_mi,
    categorical_mi,
    gaussian_gram,
    kde_entropy,
    kde_mi,
    label_gram,
    median_sq_dist,
    renyi_entropy,
    renyi_iyf,
    renyi_mi,
    softmax_probs,
    standardize,
    to_bits,
)
from ckptkd.info.kde import sq_dists

LOG2 = math.log(2.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def clusters(k=4, per=50, gap=100.0, jitter=1e-5, seed=0):
    """k tight clusters at gap * e_c, in k dims; returns (features, cluster ids)."""
    y = torch.arange(k).repeat_interleave(per)
    return gap * torch.eye(k, dtype=torch.float64)[y] + jitter * randn(k * per, k, seed=seed), y


@contextmanager
def no_warnings():
    """Turn any InformationSaturationWarning into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", InformationSaturationWarning)
        yield


# ---------------------------------------------------------------- KDE bounds


@pytest.mark.parametrize("d", [1, 5])
def test_gaussian_channel_mi_between_bounds(d):
    # T = X + N(0, I), X ~ N(0, I_d): I(X;T) = (d/2) ln 2. The N sample points are the
    # signal; the bounds are on I(X_emp; T') with X_emp uniform over them and s2 = 1.
    n = 2000
    f = randn(n, d, seed=d)
    r = kde_mi(f, s2=1.0, standardize_features=False)
    truth = d / 2 * LOG2
    assert r.ixf_lower < truth < r.ixf_upper
    # The exact MI of the empirical mixture (Monte Carlo) is near (d/2) ln 2, inside too.
    g = gen(100 + d)
    i = torch.randint(0, n, (4000,), generator=g)
    eps = torch.randn(4000, d, generator=g, dtype=torch.float64)
    log_mix = torch.logsumexp(-sq_dists(f[i] + eps, f) / 2, 1) - math.log(n)
    mc = float((-(eps**2).sum(1) / 2 - log_mix).mean())
    assert r.ixf_lower < mc < r.ixf_upper
    assert mc == pytest.approx(truth, abs=0.05 * d)


def test_identical_points_give_zero():
    f = torch.ones(50, 3, dtype=torch.float64) * 7.0
    y = torch.arange(50) % 2
    for r in (kde_mi(f, y), kde_mi(f, y, s2=1.0, standardize_features=False)):
        assert r.ixf_upper == pytest.approx(0, abs=1e-12)
        assert r.ixf_lower == pytest.approx(0, abs=1e-12)
        assert r.iyf_upper == pytest.approx(0, abs=1e-12)
        assert r.iyf_lower == pytest.approx(0, abs=1e-12)
        assert r.s2 > 0


def test_far_apart_points_give_log_n():
    n = 100
    f = 100.0 * torch.arange(n, dtype=torch.float64)[:, None]
    with pytest.warns(InformationSaturationWarning):
        r = kde_mi(f, s2=1.0, standardize_features=False)
    assert r.ixf_upper == pytest.approx(math.log(n), abs=1e-9)
    assert r.ixf_lower == pytest.approx(math.log(n), abs=1e-9)
    assert r.saturated


def test_separated_clusters_give_log_k():
    k = 4
    f, y = clusters(k)
    with no_warnings():
        r = kde_mi(f, y, s2=1.0, standardize_features=False)
    for v in (r.ixf_upper, r.ixf_lower, r.iyf_upper, r.iyf_lower, r.hy):
        assert v == pytest.approx(math.log(k), abs=1e-6)
    assert not r.saturated


def test_kde_ordering_on_random_features():
    n = 400
    f = randn(n, 8)
    informative = (f[:, 0] > 0).long() + 2 * (f[:, 1] > 0).long()
    random = torch.randint(0, 5, (n,), generator=gen(1))
    for y in (informative, random):
        for nf in (0.02, 0.1, 1.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InformationSaturationWarning)
                r = kde_mi(f, y, noise_fraction=nf)
            for iy, ix in ((r.iyf_upper, r.ixf_upper), (r.iyf_lower, r.ixf_lower)):
                assert -1e-12 <= iy <= ix + 1e-12 <= math.log(n) + 1e-12
            assert r.ixf_lower <= r.ixf_upper
    # labels that follow the features carry more information than random ones
    assert kde_mi(f, informative).iyf_upper > kde_mi(f, random).iyf_upper


def test_blocked_equals_unblocked():
    f, y = randn(200, 6, seed=3), torch.arange(200) % 3
    a, b = kde_mi(f, y, block=7), kde_mi(f, y, block=200)
    for field in ("ixf_upper", "ixf_lower", "iyf_upper", "iyf_lower"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-10)
    assert kde_entropy(f, 0.5, block=7) == pytest.approx(kde_entropy(f, 0.5, block=200), abs=1e-10)


def test_kde_matches_the_formulas_written_out():
    # every entropy recomputed literally, class by class, with logsumexp
    f, y = randn(150, 4, seed=9), torch.arange(150) % 4
    y[:7] = 3  # unequal classes
    s2 = 0.7

    def h(rows, width):  # -(1/n) sum_i log (1/n) sum_j exp(-D_ij / (2 width))
        d = sq_dists(rows, rows)
        return -(torch.logsumexp(-d / (2 * width), 1) - math.log(len(rows))).mean().item()

    r = kde_mi(f, y, s2=s2, standardize_features=False)
    for width, ixf, iyf in ((s2, r.ixf_upper, r.iyf_upper), (4 * s2, r.ixf_lower, r.iyf_lower)):
        cond = sum((y == c).sum().item() / len(y) * h(f[y == c], width) for c in range(4))
        assert ixf == pytest.approx(h(f, width), abs=1e-12)
        assert iyf == pytest.approx(h(f, width) - cond, abs=1e-12)


def test_kde_scale_invariance():
    f, y = randn(300, 5, seed=4), torch.arange(300) % 4
    a, b = kde_mi(f, y), kde_mi(1000.0 * f, y)
    assert a.ixf_upper == pytest.approx(b.ixf_upper, rel=1e-9)
    assert a.ixf_lower == pytest.approx(b.ixf_lower, rel=1e-9)
    assert a.iyf_upper == pytest.approx(b.iyf_upper, rel=1e-9)
    # per-dimension: rescaling one column alone changes nothing either
    c = kde_mi(f * torch.tensor([1.0, 1e-3, 1e3, 1.0, 5.0], dtype=torch.float64), y)
    assert a.ixf_upper == pytest.approx(c.ixf_upper, rel=1e-9)


def test_saturation_warning_tiny_s2_only():
    f = randn(500, 64, seed=5)
    with pytest.warns(InformationSaturationWarning):
        r = kde_mi(f, s2=0.1)  # the prototype's failure: standardised 64-d, s2 = 0.1
    assert r.saturated and r.ixf_upper > 0.95 * math.log(500)
    with no_warnings():
        r = kde_mi(f)  # default: s2 = 0.1 * median pairwise squared distance
    assert not r.saturated
    assert r.s2 == pytest.approx(0.1 * median_sq_dist(standardize(f)))


def test_kde_beyond_median_points_uses_a_subsampled_median():
    f = randn(2100, 3, seed=10)  # more rows than MEDIAN_POINTS: blocked, median on 2,000 rows
    r = kde_mi(f, torch.arange(2100) % 3, block=512)
    assert r.s2 == pytest.approx(0.1 * median_sq_dist(standardize(f)))
    assert r.ixf_upper == pytest.approx(kde_entropy(standardize(f), r.s2), abs=1e-12)


def test_median_sq_dist_and_standardize():
    assert median_sq_dist(torch.tensor([[0.0], [1.0], [3.0]])) == pytest.approx(4.0)  # 1, 4, 9
    f = randn(3000, 2, seed=6)
    assert median_sq_dist(f, max_points=500) == median_sq_dist(f, max_points=500)
    assert median_sq_dist(f, max_points=500) == pytest.approx(median_sq_dist(f), rel=0.1)
    z = standardize(torch.cat([f, torch.full((3000, 1), 3.3, dtype=torch.float64)], 1))
    assert torch.isfinite(z).all() and z[:, 2].abs().max() < 1e-12
    assert torch.allclose(z[:, :2].std(0, correction=0), torch.ones(2, dtype=torch.float64))


def test_bad_input_raises():
    with pytest.raises(CkptkdError):
        kde_mi(torch.zeros(1, 3))
    with pytest.raises(CkptkdError):
        kde_mi(torch.randn(10, 3), torch.zeros(9))
    with pytest.raises(CkptkdError):
        kde_entropy(torch.randn(10, 3), 0.0)


# ---------------------------------------------------------------- categorical


def test_categorical_uniform_prediction_is_zero():
    p = torch.full((60, 5), 0.2, dtype=torch.float64)
    r = categorical_mi(p, torch.arange(60) % 5)
    assert r.ixf == pytest.approx(0, abs=1e-12) and r.iyf == pytest.approx(0, abs=1e-12)
    # an infinitely hot softmax is uniform too
    r = categorical_mi(softmax_probs(randn(60, 5), tau=1e9))
    assert r.ixf == pytest.approx(0, abs=1e-9)


def test_categorical_one_hot_true_labels_give_hy():
    y = torch.tensor([0] * 10 + [1] * 30 + [2] * 60)
    r = categorical_mi(torch.nn.functional.one_hot(y).double(), y)
    hy = -sum(p * math.log(p) for p in (0.1, 0.3, 0.6))
    assert r.hy == pytest.approx(hy)
    assert r.ixf == pytest.approx(hy) and r.iyf == pytest.approx(hy)


def test_categorical_ordering_and_bounds():
    n, c = 500, 10
    y = torch.randint(0, c, (n,), generator=gen(7))
    for scale in (0.1, 1.0, 10.0):
        logits = scale * randn(n, c, seed=8) + 2.0 * torch.nn.functional.one_hot(y, c)
        for tau in (0.5, 1.0, 4.0):
            r = categorical_mi(softmax_probs(logits, tau), y)
            assert -1e-12 <= r.iyf <= r.ixf + 1e-12 <= math.log(c) + 1e-12


def test_categorical_rejects_non_probabilities():
    with pytest.raises(CkptkdError):
        categorical_mi(randn(10, 3))


# ---------------------------------------------------------------- Renyi


def renyi_of_distribution(p, alpha):
    return math.log(sum(q**alpha for q in p)) / (1 - alpha)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_label_gram_entropy_is_renyi_entropy_of_class_frequencies(alpha):
    y = torch.tensor([0] * 20 + [1] * 50 + [2] * 130)
    k = label_gram(y)
    expected = renyi_of_distribution([0.1, 0.25, 0.65], alpha)
    assert renyi_entropy(k, alpha, method="eig") == pytest.approx(expected, abs=1e-9)
    assert renyi_entropy(k, alpha) == pytest.approx(expected, abs=1e-9)
    # one-hot rows give the same Gram matrix
    assert torch.equal(label_gram(torch.nn.functional.one_hot(y)), k)


def test_alpha2_trace_form_equals_eigenvalue_form():
    k = gaussian_gram(randn(150, 4, seed=9), sigma=1.5)
    assert renyi_entropy(k, 2, method="trace") == pytest.approx(
        renyi_entropy(k, 2, method="eig"), abs=1e-9
    )
    shannon = renyi_entropy(k, 1.0)  # alpha -> 1 limit is continuous
    assert renyi_entropy(k, 1.0001) == pytest.approx(shannon, abs=1e-3)
    assert 0 <= shannon <= math.log(150)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_renyi_separated_clusters_give_label_entropy(alpha):
    # with clusters far apart relative to sigma, K_F is exactly 1[y_i=y_j]: then K_F o K_Y
    # = K_Y and I(Y;F) = H_alpha(class frequencies)
    f, y = clusters(3, per=40)
    r = renyi_iyf(y, f, alpha=alpha, sigma_f=1.0, standardize_features=False)
    assert r.mi == pytest.approx(math.log(3), abs=1e-8)
    assert r.h_f == pytest.approx(math.log(3), abs=1e-8)


def test_renyi_subsets_seeded_and_scale_invariant():
    f, g = randn(300, 5, seed=10), randn(300, 3, seed=11)
    kw = dict(alpha=2, subset=100, repeats=3)
    a, b = renyi_mi(f, g, seed=1, **kw), renyi_mi(f, g, seed=1, **kw)
    assert a == b and a.repeats == 3 and a.subset == 100 and a.mi_std > 0
    c = renyi_mi(1000.0 * f, g, seed=1, **kw)
    assert c.mi == pytest.approx(a.mi, rel=1e-9)
    full = renyi_mi(f[:80], g[:80], alpha=1.01, repeats=5)
    assert full.repeats == 1 and full.mi_std == 0  # N <= subset: one pass over all rows


# ---------------------------------------------------------------- binning


def test_binning_small_case_by_hand():
    f = torch.tensor([[0.0, 5.0], [0.1, 5.0], [0.9, 5.0], [1.0, 5.0]])  # 2nd column constant
    r = binning_mi(f, [0, 1, 0, 1], bins=2)  # cells: 0, 0, 1, 1
    assert r.ixf == pytest.approx(LOG2) and r.iyf == pytest.approx(0, abs=1e-12)
    r = binning_mi(f, [0, 0, 1, 1], bins=2)
    assert r.iyf == pytest.approx(LOG2) and r.hy == pytest.approx(LOG2)
    r = binning_mi(f, bins=4)  # cells 0, 0, 3, 3
    assert r.ixf == pytest.approx(LOG2) and not r.saturated


def test_binning_saturates_and_warns():
    f = randn(500, 64, seed=12)
    y = torch.arange(500) % 10
    with pytest.warns(InformationSaturationWarning):
        r = binning_mi(f, y)
    assert r.saturated and r.ixf == pytest.approx(math.log(500))
    assert 0 <= r.iyf <= r.ixf
    with pytest.warns(InformationSaturationWarning):
        assert binning_mi(1000.0 * f, y).ixf == r.ixf
    with no_warnings():
        assert not binning_mi(f[:, :1], y, bins=10).saturated


def test_to_bits():
    assert to_bits(LOG2) == pytest.approx(1.0)
    assert to_bits(math.log(8)) == pytest.approx(3.0)
    assert torch.allclose(to_bits(torch.tensor([LOG2])), torch.tensor([1.0]))


# ---------------------------------------------------------------- the registry


def test_registered_estimators_are_the_functions_underneath():
    from ckptkd.config import InfoConfig, KDEParams
    from ckptkd.info.registry import ESTIMATORS, get_estimator

    assert list(ESTIMATORS) == ["kde", "renyi", "categorical", "binning"]
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(200, 4, generator=g, dtype=torch.float64), torch.arange(200) % 3
    info = InfoConfig(kde=KDEParams(noise_fraction=0.3))
    out = get_estimator("kde").estimate(f, f, f, y, info)
    direct = kde_mi(f, y, noise_fraction=0.3)
    assert (out["ixf"], out["iyf"]) == (direct.ixf_upper, direct.iyf_upper)
    with pytest.raises(CkptkdError, match="did you mean 'renyi'"):
        get_estimator("reny")


def test_analysis_cache_keys_survive_the_registry(trained_run, digits):
    """Estimates cached before estimators had sections of their own are found again."""
    import hashlib
    import json

    from ckptkd.config import InfoConfig
    from ckptkd.info.analyze import _key

    ckpt, cfg = trained_run.checkpoints()[0], InfoConfig(estimator="renyi")
    old = {"estimator": "renyi", "features": "penultimate", "tau": 1.0, "probe_size": 2000, "probe_seed": 0,
           "noise_fraction": 0.1, "alpha": 1.01, "bins": 30}
    blob = json.dumps([ckpt.sha256, ckpt.model, digits.fingerprint, old], sort_keys=True)
    assert _key(ckpt, digits, cfg) == hashlib.sha256(blob.encode()).hexdigest()
    import dataclasses

    more = dataclasses.replace(cfg, renyi=dataclasses.replace(cfg.renyi, repeats=5))
    assert _key(ckpt, digits, more) != _key(ckpt, digits, cfg)  # a parameter off its default is keyed


def test_a_new_estimator_is_one_registered_class(trained_run, digits):
    from ckptkd.config import InfoConfig, from_dict
    from ckptkd.info.analyze import analyze
    from ckptkd.info.registry import ESTIMATORS, Estimator, register_estimator

    @register_estimator
    class Norm(Estimator):
        name, summary = "norm-test-only", "mean feature norm, for this test"

        def estimate(self, f, logits, x, y, info):
            return {"ixf": float(f.norm(dim=1).mean()), "iyf": 0.0}

    try:
        cfg = from_dict(InfoConfig, {"estimator": "norm-test-only", "probe_size": 50}, "info")
        rows = analyze(trained_run.checkpoints(), digits, cfg, progress=False)
        assert all(r["ixf"] > 0 and r["iyf"] == 0 for r in rows)
    finally:
        del ESTIMATORS["norm-test-only"]
