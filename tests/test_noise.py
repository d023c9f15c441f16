"""Label noise kinds (ckptkd/data/noise.py): the class-conditional ones pinned to the labels they
have always given, and instance-dependent noise, whose flips depend on the samples' inputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ckptkd import DataConfig, load_dataset
from ckptkd.config import from_dict
from ckptkd.data import validation_mask
from ckptkd.data.noise import NOISE_KINDS, feature_stats, flip_labels, projection_scores
from ckptkd.data.registry import resolve
from ckptkd.errors import CkptkdError

ROOT = Path(__file__).resolve().parents[1]

# what flip_labels gave before instance noise existed (commit 55730f5): studies and caches key on them
PINNED = {
    ("symmetric", 0.3, 0): [0, 0, 3, 3, 0, 1, 2, 3, 0, 1, 1, 1, 0, 3, 2, 3, 0, 1, 3, 0,
                            2, 1, 2, 0, 0, 1, 0, 3, 0, 3, 2, 3, 0, 1, 2, 3, 0, 1, 2, 1],
    ("symmetric", 0.25, 5): [0, 1, 1, 0, 0, 1, 1, 3, 0, 1, 2, 3, 0, 3, 2, 2, 1, 2, 2, 3,
                             0, 2, 2, 3, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3],
    ("pair", 0.3, 0): [0, 2, 3, 3, 0, 1, 2, 3, 0, 1, 3, 0, 0, 2, 2, 3, 0, 1, 3, 0,
                       1, 1, 2, 0, 0, 1, 3, 3, 0, 2, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0],
    ("pair", 0.25, 5): [0, 1, 3, 0, 0, 1, 3, 3, 0, 1, 2, 3, 0, 2, 2, 0, 1, 2, 2, 3,
                        0, 2, 2, 3, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3],
}
PINNED_FINGERPRINTS = {  # digits with label_noise 0.3, before instance noise existed
    "symmetric": "0def5f688ca1bde726fc99b3469573f283dbcd30926c5a089848cf7e2b8f1738",
    "pair": "269a1d27f64ea8468d7112c8689a8284c04376aa6a40508d47d80b0a90ef641a",
}


@pytest.mark.parametrize("kind,share,seed", sorted(PINNED))
def test_symmetric_and_pair_labels_are_what_they_always_were(kind, share, seed):
    y = np.arange(40) % 4
    assert flip_labels(y, 4, share, seed, kind).tolist() == PINNED[kind, share, seed]
    x = np.random.default_rng(1).normal(size=(40, 3))
    assert flip_labels(y, 4, share, seed, kind, x=x).tolist() == PINNED[kind, share, seed]  # inputs unread


def test_the_digits_fingerprints_of_symmetric_and_pair_noise_are_unchanged_and_instance_differs():
    prints = {k: load_dataset(DataConfig(spec="digits", label_noise=0.3, label_noise_kind=k)).fingerprint
              for k in ("symmetric", "pair", "instance")}
    assert {k: prints[k] for k in PINNED_FINGERPRINTS} == PINNED_FINGERPRINTS
    assert prints["instance"] not in PINNED_FINGERPRINTS.values()


def _inputs(n=600, d=12, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 1, d)).astype(np.float32)


@pytest.mark.parametrize("share", [0.1, 0.3, 0.45, 0.9])
def test_instance_noise_flips_exactly_the_share_and_never_keeps_a_label(share):
    x, y = _inputs(), np.arange(600) % 5
    noisy = flip_labels(y, 5, share, 3, "instance", x=x)
    assert (noisy != y).sum() == round(share * 600)  # every picked sample changed: the count is exact
    assert noisy.min() >= 0 and noisy.max() < 5


def test_instance_noise_is_seeded():
    x, y = _inputs(), np.arange(600) % 5
    a, b = (flip_labels(y, 5, 0.3, 3, "instance", x=x) for _ in range(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, flip_labels(y, 5, 0.3, 4, "instance", x=x))
    assert not np.array_equal(a, flip_labels(y, 5, 0.3, 3, "symmetric"))


def _ambiguous_half(n=2000, d=16, classes=3, seed=11):
    """Inputs whose first half sits at the features' mean (the projection's scores are uniform:
    as ambiguous as a sample can be), the second half far from it, labelled with the class the
    projection favours for them (the clear samples); and the flip weights q = 1 - s[y]."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, d)) * np.r_[np.full(n // 2, 0.01), np.full(n - n // 2, 10.0)][:, None, None]
    s = projection_scores(x, classes, np.random.default_rng(seed + 7919))  # the draw flip_labels makes first
    y = s.argmax(axis=1)
    y[: n // 2] = np.arange(n // 2) % classes
    return x, y, 1 - s[np.arange(n), y]


def test_ambiguous_samples_flip_more_often_than_clear_ones():
    x, y, q = _ambiguous_half()
    half = len(y) // 2
    assert q[:half].mean() > 0.6 > 0.4 > q[half:].mean()  # the construction does what it says
    flipped = flip_labels(y, 3, 0.3, 11, "instance", x=x) != y
    ambiguous_rate, clear_rate = flipped[:half].mean(), flipped[half:].mean()
    assert ambiguous_rate > 1.4 * clear_rate, (ambiguous_rate, clear_rate)  # 0.374 and 0.226; uniform: equal
    assert q[flipped].mean() > q[~flipped].mean() + 0.05  # 0.576 and 0.482; uniform: equal


def test_a_flip_goes_to_the_other_class_the_projection_favours_most_often():
    x = np.random.default_rng(0).normal(size=(2000, 1, 16))
    s = projection_scores(x, 3, np.random.default_rng(11 + 7919))
    y = np.argsort(-s, axis=1)[:, 1]  # every sample labelled with the projection's second choice
    noisy = flip_labels(y, 3, 0.3, 11, "instance", x=x)
    moved = noisy != y
    favoured = (noisy[moved] == s[moved].argmax(axis=1)).mean()
    assert favoured > 0.7, favoured  # 0.807 (its expectation from the scores: 0.796); a uniform other class: 0.5


def test_feature_stats_in_chunks_match_the_whole_array_and_a_constant_feature_stays_zero():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(1000, 7))
    x[:, 4] = 5.0
    mean, std = feature_stats(lambda: (x[i:i + 97] for i in range(0, len(x), 97)))
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(std, x.std(axis=0)) and std[4] == 0
    s = projection_scores(x, 4, np.random.default_rng(0))
    assert np.allclose(s.sum(axis=1), 1) and np.isfinite(s).all()
    x2 = x.copy()
    x2[:, 4] = -123.0  # a constant feature, whatever its value, changes no score
    assert np.array_equal(projection_scores(x2, 4, np.random.default_rng(0)), s)


def test_instance_noise_without_inputs_is_a_programming_error():
    with pytest.raises(ValueError, match="pass x"):
        flip_labels(np.arange(10) % 2, 2, 0.2, 0, "instance")
    assert NOISE_KINDS["instance"].needs_inputs and not NOISE_KINDS["symmetric"].needs_inputs


def test_the_instance_kind_is_a_config_choice_below_a_share_of_one():
    assert from_dict(DataConfig, {"label_noise": 0.9, "label_noise_kind": "instance"}).label_noise_kind == "instance"
    with pytest.raises(CkptkdError, match=r"data.label_noise must be in \[0, 1\), got 1"):
        from_dict(DataConfig, {"label_noise": 1, "label_noise_kind": "instance"})
    with pytest.raises(CkptkdError, match="label_noise_kind must be one of symmetric, pair, instance, got 'instances'"):
        from_dict(DataConfig, {"label_noise": 0.2, "label_noise_kind": "instances"})


def test_instance_noise_on_digits_flips_train_and_val_and_never_test():
    clean = load_dataset(DataConfig(spec="digits"))
    noisy = load_dataset(DataConfig(spec="digits", label_noise=0.3, label_noise_kind="instance"))
    assert torch.equal(noisy.x_train, clean.x_train) and torch.equal(noisy.y_test, clean.y_test)
    both = torch.cat([noisy.y_train != clean.y_train, noisy.y_val != clean.y_val])
    assert both.sum() == round(0.3 * len(both))


def _folder(root, classes=3, per_class=15):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            pixels[..., c] //= 3
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i:02d}.png")
    return root


def test_instance_noise_reads_image_files_streamed_or_in_memory_alike(tmp_path):
    spec = f"imagefolder:{_folder(tmp_path)}"
    cfgs = [DataConfig(spec=spec, label_noise=0.3, label_noise_kind="instance", stream=s, workers=0)
            for s in (False, True)]
    mem, streamed = (load_dataset(c) for c in cfgs)
    assert streamed.streaming and torch.equal(mem.y_train, streamed.y_train) and mem.fingerprint == streamed.fingerprint
    source, arg = resolve(spec)  # the labels as read, and their pixels as read (uint8)
    x, y, _, _ = source.read(arg, cfgs[0])
    pixels = np.concatenate([b.numpy() for b in x.with_shape().decoded([list(range(len(x)))], workers=0)])
    want = flip_labels(np.asarray(y), 3, 0.3, 0, "instance", x=pixels)
    val = validation_mask(spec, np.asarray(y), cfgs[0].val_fraction, cfgs[0].seed)
    assert mem.y_train.tolist() == want[~val].tolist() and mem.y_val.tolist() == want[val].tolist()
    assert (want != np.asarray(y)).sum() == round(0.3 * len(y))


def test_a_study_config_with_instance_noise_validates_and_keys_its_cells_apart(tmp_path):
    from ckptkd.config import StudyConfig, load_config
    from ckptkd.study.cells import Cell, cell_key

    text = (ROOT / "configs/studies/blobs-pair30.yaml").read_text().replace("label_noise_kind: pair",
                                                                             "label_noise_kind: instance")
    (tmp_path / "study.yaml").write_text(text)
    small = {"data.num_samples": 600}
    cfg = load_config(StudyConfig, tmp_path / "study.yaml", small)  # what ckptkd study reads first
    assert cfg.data.label_noise_kind == "instance" and cfg.data.label_noise == 0.3
    symmetric = load_config(StudyConfig, tmp_path / "study.yaml", {**small, "data.label_noise_kind": "symmetric"})
    teacher = Cell("teacher/seed0", "teacher", 0, "teacher")
    assert cell_key(teacher, cfg) != cell_key(teacher, symmetric)  # no cell of one is taken for the other's
