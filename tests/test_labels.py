"""Labels that look wrong: not class indices from 0, classes the splits disagree on, and a
teacher whose head has another number of classes than the data (issue 22).

One or a few labels that no training sample has (labels that start at 1) are warned about,
naming the classes; where the run cannot be what was meant it is refused. The CLI's one-line
refusals are in tests/test_errors_table.py (label-gap, label-gap-noise).
"""
import numpy as np
import pytest
import torch

from ckptkd import CkptkdError, DataConfig, KDConfig, StageConfig, Teacher, create_model, distill, load_dataset


def _npz(path, y, yt):
    rng = np.random.default_rng(0)
    y, yt = np.asarray(y), np.asarray(yt)
    np.savez(path, x=rng.random((len(y), 1, 8, 8), dtype=np.float32), y=y,
             x_test=rng.random((len(yt), 1, 8, 8), dtype=np.float32), y_test=yt)
    return f"npz:{path}"


def test_labels_that_are_not_indices_are_refused_naming_the_classes(tmp_path):
    spec = _npz(tmp_path / "gap.npz", np.arange(40) % 2 * 1000, np.arange(10) % 2 * 1000)
    with pytest.raises(CkptkdError, match=r"the training labels are 0, 1000 \(2 classes\), yet labels go up to 1000: "
                                          r"no training sample has label 1, 2, 3, 4, 5, \.\.\., so models get 1001 "
                                          r"outputs, most of them for no class; labels must be class indices from 0 "
                                          r"\(remap them to 0\.\.1\)"):
        load_dataset(spec)


def test_labels_that_start_at_1_are_warned_about_naming_the_classes(tmp_path, capsys):
    data = load_dataset(_npz(tmp_path / "one.npz", np.arange(40) % 3 + 1, np.arange(9) % 3 + 1))
    err = capsys.readouterr().err
    assert data.num_classes == 4 and err.count("\n") == 1
    assert ("the training labels are 1, 2, 3 (3 classes), yet labels go up to 3: no training sample has label 0, "
            "so models get 4 outputs; labels must be class indices from 0 (remap them to 0..2)") in err


def test_label_noise_into_classes_no_sample_has_is_refused(tmp_path, capsys):
    spec = _npz(tmp_path / "one.npz", np.arange(40) % 3 + 1, np.arange(9) % 3 + 1)
    with pytest.raises(CkptkdError, match="data.label_noise would flip samples to those labels"):
        load_dataset(DataConfig(spec=spec, label_noise=0.2))
    assert load_dataset(DataConfig(spec=spec)).num_classes == 4  # without noise: the warning only


def test_a_test_class_that_no_training_sample_has_is_warned_about(tmp_path, capsys):
    load_dataset(_npz(tmp_path / "unseen.npz", np.arange(40) % 2 * 2, np.arange(9) % 3))  # train 0, 2; test 0, 1, 2
    assert "the training labels are 0, 2 (2 classes), yet labels go up to 2: no training sample has label 1" in \
        capsys.readouterr().err


def test_contiguous_labels_pass_silently(tmp_path, capsys):
    assert load_dataset(_npz(tmp_path / "ok.npz", np.arange(40) % 4, np.arange(8) % 4)).num_classes == 4
    assert capsys.readouterr().err == ""


def test_a_teacher_module_with_another_head_is_refused_before_training(digits):
    torch.manual_seed(0)
    teacher = Teacher([create_model("mlp_xs", 10, digits.in_shape), create_model("mlp_xs", 5, digits.in_shape)])
    with pytest.raises(CkptkdError, match=r"teacher member 1 \(MLP\) has 5 outputs but the data has 10 classes; "
                                          "give a teacher trained on these classes"):
        distill(digits, StageConfig(model="mlp_xs", epochs=1, batch_size=64), teacher, KDConfig(), progress=False)
