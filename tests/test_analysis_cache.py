"""The information analysis is cached: proven by counting the estimator's calls."""
from dataclasses import replace

import pytest

import ckptkd.info.analyze as analyze_module
from ckptkd import InfoConfig
from ckptkd.info.analyze import analyze


@pytest.fixture
def estimates(monkeypatch):
    """The number of checkpoints whose raw estimates were computed, from now on."""
    calls = []
    real = analyze_module.estimate

    def counting(f, logits, x, y, cfg):
        calls.append(cfg.estimator)
        return real(f, logits, x, y, cfg)

    monkeypatch.setattr(analyze_module, "estimate", counting)
    return calls


def test_a_second_analysis_computes_nothing_and_a_new_setting_recomputes(run_copy, digits, estimates):
    ckpts = run_copy.checkpoints()
    cfg = InfoConfig(probe_size=200)
    first = analyze(ckpts, digits, cfg, folder=run_copy.path, progress=False)
    assert len(estimates) == len(ckpts) == 3

    estimates.clear()
    assert analyze(ckpts, digits, cfg, folder=run_copy.path, progress=False) == first
    assert estimates == []  # served from the cache

    rescored = analyze(ckpts, digits, replace(cfg, weight_x=0.0), folder=run_copy.path, progress=False)
    assert estimates == []  # the score's weights are applied to cached raw estimates
    assert [r["score"] for r in rescored] == [r["iyf_minmax"] for r in first]

    analyze(ckpts, digits, replace(cfg, probe_size=150), folder=run_copy.path, progress=False)
    assert len(estimates) == 3  # another probe set: every raw estimate again

    estimates.clear()
    reseeded = analyze(ckpts, digits, replace(cfg, probe_seed=1), folder=run_copy.path, progress=False)
    assert len(estimates) == 3  # another draw of the probe: every raw estimate again
    assert [r["ixf"] for r in reseeded] != [r["ixf"] for r in first]

    estimates.clear()
    analyze(ckpts[:2], digits, cfg, folder=run_copy.path, progress=False)
    assert estimates == []


def test_without_a_folder_nothing_is_cached(run_copy, digits, estimates):
    ckpts = run_copy.checkpoints()[:2]
    analyze(ckpts, digits, InfoConfig(probe_size=200), progress=False)
    analyze(ckpts, digits, InfoConfig(probe_size=200), progress=False)
    assert len(estimates) == 4
