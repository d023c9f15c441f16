"""The executor registry, the study lock and the checks made before a study folder is touched (no Ray runs here)."""
import sys

import pytest

from ckptkd.config import StudyConfig, from_dict
from ckptkd.errors import CkptkdError
from ckptkd.study import run_study
from ckptkd.study.executors import EXECUTORS, get_executor
from ckptkd.study.lock import StudyLock
from ckptkd.study.shipping import install_cell

TINY = {"name": "tiny", "data": {"spec": "digits", "augment": False},
        "teacher": {"model": "mlp_xs", "epochs": 3, "save_every": 1, "batch_size": 64},
        "student": {"model": "mlp_xs", "epochs": 1, "batch_size": 64}, "student_seeds": [0],
        "estimators": ["kde"], "policies": ["last"], "snapshot_policies": []}


def test_the_registry_knows_local_and_ray_and_refuses_others_in_one_line():
    assert get_executor("local").name == "local" and {"local", "ray"} <= set(EXECUTORS)
    with pytest.raises(CkptkdError, match=r"^unknown executor 'rey' \(did you mean 'ray'\?\); use one of local, ray"):
        get_executor("rey")


def test_ray_sizes_itself_and_local_has_no_cluster():
    with pytest.raises(CkptkdError, match=r"^--jobs 2 does not apply to --executor ray"):
        get_executor("ray", jobs=2)
    with pytest.raises(CkptkdError, match=r"^--address names a Ray cluster; add --executor ray"):
        get_executor("local", address="10.0.0.1:6379")


def test_without_ray_installed_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(CkptkdError) as e:
        get_executor("ray")
    assert str(e.value) == "--executor ray needs Ray, which is not installed; install it with pip install 'ckptkd[ray]'"


@pytest.mark.enable_socket
def test_an_unreachable_address_fails_fast_in_one_line_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("ray")
    from ckptkd.cli import main

    (tmp_path / "s.yaml").write_text("name: tiny\ndata: {spec: digits}\n")
    code = main(["study", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--executor", "ray",
                 "--address", "127.0.0.1:9"])  # the discard port: nothing listens
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("ckptkd: error: no Ray cluster answers at --address '127.0.0.1:9' (Connection refused")
    assert not (tmp_path / "out").exists()


def test_a_second_driver_on_a_study_folder_refuses(tmp_path):
    cfg = from_dict(StudyConfig, TINY)
    (tmp_path / "study").mkdir()
    with StudyLock(tmp_path / "study"):  # the first driver, still running
        with pytest.raises(CkptkdError, match=r"^study folder '.*study' is in use by another ckptkd study \(pid \d+"):
            run_study(cfg, tmp_path / "study", progress=False)
        assert not (tmp_path / "study" / "study.yaml").exists()  # the second wrote nothing
    # a lock left by a driver that died (the file stays, the kernel dropped the lock) blocks nothing
    results = run_study(cfg, tmp_path / "study", progress=False)
    assert results["teachers"] and (tmp_path / "study" / ".lock").exists()


def test_a_cell_is_installed_whole_with_its_result_last_over_leftovers(tmp_path):
    cells = tmp_path / "cells" / "student" / "nokd"
    (cells / ".seed0.incoming").mkdir(parents=True)  # a driver killed while installing
    (cells / ".seed0.incoming" / "result.json").write_text("{}")
    (cells / "seed0").mkdir()
    (cells / "seed0" / "stale.txt").write_text("an unfinished attempt")
    install_cell(tmp_path, "student/nokd/seed0", {"files": {"result.json": b'{"key": "k"}',
                                                            "checkpoints/epoch_0001.safetensors": b"w"}})
    assert sorted(p.name for p in cells.iterdir()) == ["seed0"]
    assert sorted(str(p.relative_to(cells / "seed0")) for p in (cells / "seed0").rglob("*")) == [
        "checkpoints", "checkpoints/epoch_0001.safetensors", "result.json"]
    assert (cells / "seed0" / "result.json").read_bytes() == b'{"key": "k"}'


def test_the_progress_bar_counts_cells_in_flight_and_failed():
    from ckptkd.study.cells import Cell
    from ckptkd.study.executors import Tracker

    class Bar:
        n, postfix = 0, ""

        def update(self, k=1):
            self.n += k

        def set_postfix_str(self, text):
            self.postfix = text

    bar, written = Bar(), []
    tracker = Tracker(bar, lambda cell, shipped: written.append((cell.id, shipped)))
    cells = [Cell(f"student/nokd/seed{s}", "student", s, "nokd") for s in range(3)]
    for c in cells:
        tracker.started(c)
    assert bar.postfix == "in flight 3 (running or queued), failed 0"
    tracker.done(cells[0], {"files": {}})
    assert bar.postfix == "in flight 2 (running or queued), failed 0" and bar.n == 1
    tracker.fail(cells[1])
    assert bar.postfix == "in flight 1 (running or queued), failed 1" and bar.n == 1
    assert written == [("student/nokd/seed0", {"files": {}})]


def test_a_file_dataset_travels_as_bytes_and_loads_the_same_on_a_worker(tmp_path, monkeypatch):
    import numpy as np

    from ckptkd.config import DataConfig
    from ckptkd.data import load_dataset
    from ckptkd.study import cells
    from ckptkd.study.shipping import materialise_data, shipped_data

    assert shipped_data(DataConfig(spec="digits")) is None  # regenerated where the cell runs
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 4,
             x_test=rng.random((12, 1, 8, 8), dtype=np.float32), y_test=np.arange(12) % 4)
    cfg = DataConfig(spec=f"npz:{tmp_path / 'd.npz'}", augment=False)
    shipped = shipped_data(cfg)
    assert list(shipped["files"]) == ["d.npz"] and shipped["source"] == "npz"
    (tmp_path / "d.npz").rename(tmp_path / "gone.npz")  # the worker cannot see the driver's file
    monkeypatch.setattr(cells, "_DATA", {})
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node"))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR: this "node"'s temporary folder
    (tmp_path / "node").mkdir()
    fetches = []
    materialise_data(cfg, lambda: fetches.append(1) or shipped)
    on_worker = cells._data(cfg)
    cells._data(cfg)
    assert fetches == [1]  # fetched once, however many cells read it
    assert on_worker.fingerprint == load_dataset(DataConfig(spec=f"npz:{tmp_path / 'gone.npz'}",
                                                            augment=False)).fingerprint
    assert (tmp_path / "node" / "ckptkd-data" / shipped["sha256"] / "d.npz").exists()
