"""Run folders, safe weight files, atomic writes, and foreign checkpoint folders."""
import errno
import os

import pytest
import torch

from ckptkd import CkptkdError, Run, create_model, load_model, open_checkpoint, open_trajectory
from ckptkd.io import atomic_write, sha256_file
from ckptkd.trajectory import save_weights
from ckptkd.trajectory.foreign import read_torch_state_dict

IN_SHAPE = (1, 8, 8)


def _model(seed=0, spec="mlp_xs", classes=10):
    torch.manual_seed(seed)
    return create_model(spec, classes, IN_SHAPE).eval()


def _new_run(path, config=None):
    return Run.create(path, config or {"lr": 0.1}, model="mlp_xs", num_classes=10, in_shape=IN_SHAPE,
                      data_fingerprint="f" * 64)


# ---------------------------------------------------------------- run folders


def test_checkpoint_round_trip(tmp_path):
    run = _new_run(tmp_path / "run")
    model = _model()
    run.save_checkpoint(model.state_dict(), 3, {"test_acc": 0.5})
    (ckpt,) = run.checkpoints()
    assert ckpt.epoch == 3 and ckpt.model == "mlp_xs"
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["test_acc"] == 0.5
    assert ckpt.meta["sha256"] == sha256_file(ckpt.path)
    loaded = ckpt.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v)


def test_checkpoints_come_in_epoch_order(tmp_path):
    run = _new_run(tmp_path / "run")
    for epoch in (10, 2, 6):
        run.save_checkpoint(_model().state_dict(), epoch, {})
    assert [c.epoch for c in run.checkpoints()] == [2, 6, 10]


def test_weights_without_sidecar_are_not_a_checkpoint(tmp_path):
    run = _new_run(tmp_path / "run")
    run.save_checkpoint(_model().state_dict(), 1, {})
    save_weights(run.path / "checkpoints" / "epoch_0002.safetensors", _model().state_dict())  # crash before sidecar
    assert [c.epoch for c in run.checkpoints()] == [1]


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte"])
def test_damaged_weights_fail_the_sha256_check(tmp_path, damage):
    run = _new_run(tmp_path / "run")
    ckpt = run.save_checkpoint(_model().state_dict(), 1, {})
    data = bytearray(ckpt.path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-1] ^= 0xFF
    ckpt.path.write_bytes(bytes(data))
    (ckpt,) = run.checkpoints()
    with pytest.raises(CkptkdError, match="sha256"):
        ckpt.state_dict()


def test_run_refuses_a_folder_holding_a_different_run(tmp_path, digest):
    run = _new_run(tmp_path / "run", {"lr": 0.1})
    run.save_checkpoint(_model().state_dict(), 1, {})
    before = digest(run.path)
    with pytest.raises(CkptkdError, match="--resume.*--overwrite"):
        _new_run(tmp_path / "run", {"lr": 0.2})
    assert digest(run.path) == before


def test_run_refuses_a_folder_of_other_files(tmp_path, digest):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    before = digest(tmp_path / "out")
    with pytest.raises(CkptkdError, match="not a ckptkd run"):
        _new_run(tmp_path / "out")
    with pytest.raises(CkptkdError, match="not a ckptkd run"):
        Run.create(tmp_path / "out", {}, model="mlp_xs", num_classes=10, in_shape=IN_SHAPE, data_fingerprint="",
                   overwrite=True)
    assert digest(tmp_path / "out") == before


def test_resume_with_the_same_config_reopens_the_run(tmp_path):
    run = _new_run(tmp_path / "run", {"lr": 0.1})
    run.save_checkpoint(_model().state_dict(), 1, {})
    again = Run.create(tmp_path / "run", {"lr": 0.1}, model="mlp_xs", num_classes=10, in_shape=IN_SHAPE,
                       data_fingerprint="f" * 64, resume=True)
    assert [c.epoch for c in again.checkpoints()] == [1]
    assert again.manifest["created"] == run.manifest["created"]


def test_resume_with_another_config_is_refused(tmp_path):
    _new_run(tmp_path / "run", {"lr": 0.1})
    with pytest.raises(CkptkdError, match="different config"):
        Run.create(tmp_path / "run", {"lr": 0.3}, model="mlp_xs", num_classes=10, in_shape=IN_SHAPE,
                   data_fingerprint="", resume=True)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CkptkdError, match="no space left"):
        atomic_write(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temporary file left behind


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # the write itself raises
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


# ---------------------------------------------------------------- foreign checkpoints


@pytest.fixture
def foreign_folder(tmp_path):
    """Three checkpoints of three mlp_xs models, in three other tools' formats."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    models = {epoch: _model(seed=epoch) for epoch in (2, 3, 10)}
    torch.save(models[2].state_dict(), folder / "epoch_2.pt")
    torch.save({f"module.{k}": v for k, v in models[10].state_dict().items()}, folder / "epoch_10.pt")  # DDP
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in models[3].state_dict().items()}},
               folder / "epoch=3.ckpt")  # Lightning
    return folder, models


def test_foreign_folder_is_ordered_by_the_epoch_in_the_file_names(foreign_folder):
    folder, _ = foreign_folder
    ckpts = open_trajectory(folder, model="mlp_xs")
    assert [c.epoch for c in ckpts] == [2, 3, 10]
    assert [c.path.name for c in ckpts] == ["epoch_2.pt", "epoch=3.ckpt", "epoch_10.pt"]


def test_foreign_checkpoints_load_with_prefixes_stripped(foreign_folder):
    folder, models = foreign_folder
    x = torch.randn(4, *IN_SHAPE)
    for ckpt in open_trajectory(folder, model="mlp_xs"):
        loaded = load_model(ckpt, 10, IN_SHAPE)
        assert not loaded.training
        assert torch.allclose(loaded(x), models[ckpt.epoch](x))


def test_foreign_folder_needs_the_architecture(foreign_folder):
    folder, _ = foreign_folder
    with pytest.raises(CkptkdError, match="--model"):
        open_trajectory(folder)


def test_wrong_architecture_is_named_in_the_error(foreign_folder):
    folder, _ = foreign_folder
    ckpt = open_trajectory(folder, model="cnn1d_xs")[0]
    with pytest.raises(CkptkdError, match="does not match architecture 'cnn1d_xs'"):
        load_model(ckpt, 10, IN_SHAPE)


def test_same_keys_but_other_widths_is_an_error(foreign_folder):
    folder, _ = foreign_folder
    ckpt = open_trajectory(folder, model="mlp_s")[0]  # mlp_s: 64 hidden units, mlp_xs: 32
    with pytest.raises(CkptkdError, match="does not fit 'mlp_s'"):
        load_model(ckpt, 10, IN_SHAPE)


def test_wrong_class_count_says_so(foreign_folder):
    folder, _ = foreign_folder
    ckpt = open_trajectory(folder, model="mlp_xs")[0]
    with pytest.raises(CkptkdError, match="classes"):
        load_model(ckpt, 3, IN_SHAPE)


def test_empty_folder_is_not_a_trajectory(tmp_path):
    with pytest.raises(CkptkdError, match="no checkpoint files"):
        open_trajectory(tmp_path, model="mlp_xs")


def test_single_foreign_file_needs_its_architecture(foreign_folder):
    folder, _ = foreign_folder
    with pytest.raises(CkptkdError, match="architecture"):
        open_checkpoint(folder / "epoch_2.pt")
    assert open_checkpoint(folder / "epoch_2.pt", "mlp_xs").epoch == 2


class _Exploit:
    """Unpickling this would open (create) ``marker``: any code could run instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": _Exploit(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CkptkdError, match="refusing to load"):
        read_torch_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_torch_file_is_an_error(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CkptkdError, match="truncated"):
        read_torch_state_dict(tmp_path / "m.pt")
