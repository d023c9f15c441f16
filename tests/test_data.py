"""Datasets by spec string, their checks, and the per-sample deterministic augmentation."""
import numpy as np
import pytest
import torch
from PIL import Image

from ckptkd import CkptkdError, DataConfig, load_dataset
from ckptkd.data import Augment
from ckptkd.data.augment import default_augment
from ckptkd.data.cifar import write_fake_cifar


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def _arrays(n=20, n_test=8, shape=(1, 16), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.normal(size=(n, *shape)).astype(np.float32), y=np.arange(n) % classes,
                x_test=rng.normal(size=(n_test, *shape)).astype(np.float32), y_test=np.arange(n_test) % classes)


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_is_signals_of_length_40_in_10_classes():
    data = load_dataset(DataConfig(spec="mnist1d", num_samples=400))
    assert data.x_train.shape == (288, 1, 40) and data.x_val.shape == (32, 1, 40) and data.x_test.shape == (80, 1, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10
    assert data.in_shape == (1, 40)


def test_mnist1d_fingerprint_is_stable_across_loads():
    a = load_dataset(DataConfig(spec="mnist1d", num_samples=400))
    b = load_dataset(DataConfig(spec="mnist1d", num_samples=400))
    assert a.fingerprint == b.fingerprint
    assert torch.equal(a.x_train, b.x_train)


def test_mnist1d_other_seed_gives_other_data():
    a = load_dataset(DataConfig(spec="mnist1d", num_samples=400, seed=0))
    b = load_dataset(DataConfig(spec="mnist1d", num_samples=400, seed=1))
    assert a.fingerprint != b.fingerprint


def test_mnist1d_generation_leaves_numpy_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_dataset(DataConfig(spec="mnist1d", num_samples=400, seed=7))
    assert np.random.rand() == expected


# ---------------------------------------------------------------- digits


def test_digits_are_one_channel_8x8_images(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8)
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert digits.num_classes == 10


def test_digits_split_is_stratified(digits):
    train_counts = torch.bincount(torch.cat([digits.y_train, digits.y_val]), minlength=10).double()
    test_counts = torch.bincount(digits.y_test, minlength=10).double()
    fraction = test_counts / (train_counts + test_counts)
    assert torch.allclose(fraction, torch.full((10,), 0.2, dtype=torch.float64), atol=0.01)


def test_digits_do_not_flip(digits):
    # a mirrored 2 is not a 2: glyphs only shift
    assert digits.augment.flip is False and digits.augment.shift == 1


# ---------------------------------------------------------------- the validation split


def _ids(n=300, classes=(0.5, 0.3, 0.2)):
    """An npz spec whose every training input is its own index, in classes of the given shares."""
    y = np.concatenate([np.full(int(share * n), c) for c, share in enumerate(classes)])
    x = np.arange(len(y), dtype=np.float32)[:, None, None].repeat(4, axis=2)
    return dict(x=x, y=y, x_test=-np.ones((9, 1, 4), np.float32), y_test=np.arange(9) % len(classes))


def test_val_split_is_stratified_seeded_and_disjoint_from_train(tmp_path):
    spec = _write_npz(tmp_path / "d.npz", **_ids())
    data = load_dataset(DataConfig(spec=spec, val_fraction=0.1))
    train_ids, val_ids = set(data.x_train[:, 0, 0].long().tolist()), set(data.x_val[:, 0, 0].long().tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(300))
    assert torch.bincount(data.y_val).tolist() == [15, 9, 6]  # 10% of each class
    assert torch.equal(load_dataset(DataConfig(spec=spec, val_fraction=0.1)).x_val, data.x_val)
    assert not torch.equal(load_dataset(DataConfig(spec=spec, val_fraction=0.1, seed=1)).x_val, data.x_val)
    assert data.x_test.shape == (9, 1, 4)  # the test split is never touched


def test_val_fraction_zero_gives_an_empty_split_of_the_right_shape(tmp_path):
    spec = _write_npz(tmp_path / "d.npz", **_ids())
    data = load_dataset(DataConfig(spec=spec, val_fraction=0))
    assert data.x_val.shape == (0, 1, 4) and data.y_val.shape == (0,) and data.y_val.dtype == torch.int64
    assert len(data.x_train) == 300


def test_the_fingerprint_covers_the_val_split(tmp_path):
    arrays = _ids()
    data = load_dataset(DataConfig(spec=_write_npz(tmp_path / "a.npz", **arrays)))
    held = data.x_val[:, 0, 0].long().numpy()
    arrays["x"][held] += 1000  # the same labels, so the same split: only the validation inputs differ
    other = load_dataset(DataConfig(spec=_write_npz(tmp_path / "b.npz", **arrays)))
    assert torch.equal(other.x_train, data.x_train) and not torch.equal(other.x_val, data.x_val)
    assert other.fingerprint != data.fingerprint


def test_label_noise_flips_train_and_val_alike_and_never_test():
    clean = load_dataset(DataConfig(spec="digits"))
    noisy = load_dataset(DataConfig(spec="digits", label_noise=0.3))
    assert torch.equal(noisy.x_val, clean.x_val) and torch.equal(noisy.x_train, clean.x_train)  # the same split
    assert torch.equal(noisy.y_test, clean.y_test)
    for a, b in ((noisy.y_train, clean.y_train), (noisy.y_val, clean.y_val)):
        assert 0.2 < (a != b).double().mean() < 0.4


def test_pair_noise_moves_each_flipped_label_to_the_next_class():
    clean = load_dataset(DataConfig(spec="digits"))
    noisy = load_dataset(DataConfig(spec="digits", label_noise=0.3, label_noise_kind="pair"))
    assert torch.equal(noisy.y_test, clean.y_test) and torch.equal(noisy.x_train, clean.x_train)
    for a, b in ((noisy.y_train, clean.y_train), (noisy.y_val, clean.y_val)):
        flipped = a != b
        assert 0.2 < flipped.double().mean() < 0.4
        assert torch.equal(a[flipped], (b[flipped] + 1) % 10)  # always the next class, 9 wraps to 0
    symmetric = load_dataset(DataConfig(spec="digits", label_noise=0.3))
    assert torch.equal(symmetric.y_train != clean.y_train, noisy.y_train != clean.y_train)  # the same samples
    assert not torch.equal(symmetric.y_train, noisy.y_train) and symmetric.fingerprint != noisy.fingerprint


def test_a_label_noise_kind_is_checked():
    from ckptkd.config import from_dict

    with pytest.raises(CkptkdError, match=r"data.label_noise_kind must be one of symmetric, pair, instance, got "
                                          r"'pairs' \(did you mean 'pair'\?\)"):
        from_dict(DataConfig, {"label_noise_kind": "pairs"})
    with pytest.raises(CkptkdError, match="data.label_noise must be below 0.5 for pair noise"):
        from_dict(DataConfig, {"label_noise": 0.5, "label_noise_kind": "pair"})
    assert from_dict(DataConfig, {"label_noise": 0.5}).label_noise_kind == "symmetric"


def test_val_fraction_out_of_range_is_refused():
    from ckptkd.config import from_dict

    for bad in (-0.1, 1.0):
        with pytest.raises(CkptkdError, match=r"data.val_fraction must be in \[0, 1\)"):
            from_dict(DataConfig, {"spec": "digits", "val_fraction": bad})


# ---------------------------------------------------------------- npz and user functions


def test_npz_file_loads_as_given(tmp_path):
    arrays = _arrays(shape=(2, 16))
    data = load_dataset(DataConfig(spec=_write_npz(tmp_path / "d.npz", **arrays), val_fraction=0))
    assert data.x_train.shape == (20, 2, 16)
    assert np.array_equal(data.x_train.numpy(), arrays["x"])
    assert data.num_classes == 3


def test_npz_feature_vectors_get_a_channel_axis(tmp_path):
    arrays = _arrays()
    arrays["x"], arrays["x_test"] = arrays["x"][:, 0], arrays["x_test"][:, 0]  # (N, 16)
    data = load_dataset(_write_npz(tmp_path / "d.npz", **arrays))
    assert data.x_train.shape == (18, 1, 16) and data.x_val.shape == (2, 1, 16) and data.x_test.shape == (8, 1, 16)


def test_user_function_spec_loads_a_module_from_the_path(tmp_path, monkeypatch):
    (tmp_path / "my_ckptkd_dataset.py").write_text(
        "import torch\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return (torch.randn(30, 1, 12, generator=g), torch.arange(30) % 2,\n"
        "            torch.randn(10, 1, 12, generator=g), torch.arange(10) % 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_dataset("my_ckptkd_dataset:make")
    assert data.x_train.shape == (27, 1, 12) and data.x_val.shape == (3, 1, 12) and data.num_classes == 2


def test_user_function_that_cannot_be_imported_is_an_error():
    with pytest.raises(CkptkdError, match="cannot import dataset"):
        load_dataset("no_such_module_xyz:make")


# ---------------------------------------------------------------- image folders


def test_cifar10_folder_is_standardised_per_channel(tmp_path):
    write_fake_cifar(tmp_path, 10, n_train=50, n_test=10, seed=0)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.x_train.shape == (45, 3, 32, 32) and data.x_val.shape == (5, 3, 32, 32)
    assert data.x_test.shape == (10, 3, 32, 32)
    mean = data.x_train.mean(dim=(0, 2, 3))  # the statistics of the training split proper
    std = data.x_train.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(std, torch.ones(3), atol=1e-3)
    assert data.augment.flip  # natural images flip


def test_imagefolder_reads_pngs_one_class_per_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(DataConfig(spec=f"imagefolder:{tmp_path}", test_fraction=0.25, val_fraction=0))
    assert data.x_train.shape == (6, 3, 6, 6) and data.x_test.shape == (2, 3, 6, 6)
    assert data.num_classes == 2
    assert sorted(data.y_test.tolist()) == [0, 1]


def test_imagefolder_resizes_to_image_size(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i, side in enumerate((5, 9)):
            Image.new("RGB", (side, side), (i * 100, 0, 0)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(DataConfig(spec=f"imagefolder:{tmp_path}", image_size=4, test_fraction=0.5))
    assert data.in_shape == (3, 4, 4)


# ---------------------------------------------------------------- bad data


def test_nan_inputs_are_refused(tmp_path):
    arrays = _arrays()
    arrays["x"][3, 0, 5] = np.nan
    with pytest.raises(CkptkdError, match="NaN"):
        load_dataset(_write_npz(tmp_path / "d.npz", **arrays))


def test_negative_labels_are_refused(tmp_path):
    arrays = _arrays()
    arrays["y"][0] = -1
    with pytest.raises(CkptkdError, match="labels must be >= 0"):
        load_dataset(_write_npz(tmp_path / "d.npz", **arrays))


def test_inputs_and_labels_of_different_length_are_refused(tmp_path):
    arrays = _arrays()
    arrays["y"] = arrays["y"][:-1]
    with pytest.raises(CkptkdError, match="20 inputs but 19 labels"):
        load_dataset(_write_npz(tmp_path / "d.npz", **arrays))


def test_empty_split_is_refused(tmp_path):
    arrays = _arrays()
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:0], arrays["y_test"][:0]
    with pytest.raises(CkptkdError, match="test split is empty"):
        load_dataset(_write_npz(tmp_path / "d.npz", **arrays))


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(CkptkdError, match="did you mean 'mnist1d'"):
        load_dataset("mnist1")


def test_npz_without_the_four_arrays_names_what_is_missing(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    with pytest.raises(CkptkdError, match=r"lacks arrays \['y_test'\]"):
        load_dataset(_write_npz(tmp_path / "d.npz", **arrays))


def test_missing_npz_file_is_an_error(tmp_path):
    with pytest.raises(CkptkdError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


# ---------------------------------------------------------------- augmentation

SIGNAL_AUG = Augment(shift=3, noise=0.1)


def _signals(n=10, length=40):
    return torch.randn(n, 1, length, generator=torch.Generator().manual_seed(0))


def test_a_samples_view_does_not_depend_on_its_batch():
    x = _signals()
    p = SIGNAL_AUG.params(len(x), (1, 40), seed=0, epoch=1)
    idx = torch.tensor([3, 7])
    alone = SIGNAL_AUG.apply(x[idx], {k: v[idx] for k, v in p.items()})
    together = SIGNAL_AUG.apply(x, p)[idx]
    assert torch.equal(alone, together)


def test_views_differ_across_epochs():
    x = _signals()
    a = SIGNAL_AUG.apply(x, SIGNAL_AUG.params(len(x), (1, 40), seed=0, epoch=1))
    b = SIGNAL_AUG.apply(x, SIGNAL_AUG.params(len(x), (1, 40), seed=0, epoch=2))
    assert not torch.equal(a, b)


def test_views_repeat_for_the_same_seed_and_epoch():
    x = _signals()
    a = SIGNAL_AUG.apply(x, SIGNAL_AUG.params(len(x), (1, 40), seed=5, epoch=3))
    b = SIGNAL_AUG.apply(x, SIGNAL_AUG.params(len(x), (1, 40), seed=5, epoch=3))
    assert torch.equal(a, b)


def test_disabled_augmentation_is_the_identity():
    x = _signals()
    aug = Augment()
    assert not aug.enabled
    assert aug.apply(x, aug.params(len(x), (1, 40), seed=0, epoch=1)) is x
    assert not load_dataset(DataConfig(spec="digits", augment=False)).augment.enabled


def test_image_flip_and_shift_keep_the_shape():
    x = torch.randn(5, 3, 32, 32)
    aug = default_augment("image", (3, 32, 32))
    out = aug.apply(x, aug.params(5, (3, 32, 32), seed=0, epoch=1))
    assert out.shape == x.shape


def test_image_flip_mirrors_the_flipped_samples():
    x = torch.randn(8, 3, 6, 6)
    aug = Augment(flip=True)
    p = aug.params(8, (3, 6, 6), seed=0, epoch=1)
    out = aug.apply(x, p)
    assert p["flip"].any() and not p["flip"].all()
    for i in range(8):
        assert torch.equal(out[i], x[i].flip(-1) if p["flip"][i] else x[i])


def test_signal_shift_moves_the_signal_and_fills_with_zeros():
    x = torch.arange(1, 11, dtype=torch.float32).view(1, 1, 10)
    out = Augment(shift=2).apply(x, {"shift": torch.tensor([[2]])})
    assert out.flatten().tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]


def test_blobs_is_a_seeded_tabular_task_that_is_not_augmented():
    data = load_dataset(DataConfig(spec="blobs", num_samples=500))
    assert data.x_train.shape == (360, 1, 20) and data.x_val.shape == (40, 1, 20) and data.x_test.shape == (100, 1, 20)
    assert data.num_classes == 5 and not data.augment.enabled and data.augment_why == "default for blobs"
    again = load_dataset(DataConfig(spec="blobs", num_samples=500))
    other = load_dataset(DataConfig(spec="blobs", num_samples=500, seed=1))
    assert again.fingerprint == data.fingerprint != other.fingerprint
