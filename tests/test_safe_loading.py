"""No file ckptkd reads can run code: every loading path refuses a malicious pickle.

The payload writes a marker file when unpickled. Each test first shows that the payload is
live (plain pickle / ``torch.load(weights_only=False)`` / ``np.load(allow_pickle=True)``
does create the marker), so no test can pass because the payload was a dud, then that
ckptkd's path refuses the file with a ``CkptkdError`` (or exit status 2) and the marker
never appears.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptkd import CkptkdError, DataConfig, load_dataset
from ckptkd.cli import main
from ckptkd.trajectory import load_model, open_checkpoint, open_trajectory
from ckptkd.trajectory.foreign import read_torch_state_dict

PACKAGE = Path(__file__).resolve().parents[1] / "ckptkd"


class Payload:
    """Unpickling this calls ``exec``, which writes ``pwned`` into ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"


def _live(load, marker: Path) -> None:
    """``load()`` (the unsafe way) runs the payload; then the marker is removed again."""
    assert not marker.exists()
    try:
        load()
    except Exception:  # noqa: BLE001 - the payload runs before anything else can fail
        pass
    assert marker.read_text() == "pwned", "the payload did not run: this test would pass vacuously"
    marker.unlink()


def _torch_zip(path: Path, marker: Path) -> Path:
    """A torch.save() checkpoint (zip format) with real tensors beside the payload, Lightning-style."""
    torch.save({"state_dict": {"fc.weight": torch.zeros(10, 32)}, "hyper_parameters": Payload(marker)}, path)
    return path


def _raw_pickle(path: Path, marker: Path, protocol: int = 2) -> Path:
    """A plain pickle (torch's legacy format) of a state_dict-looking dict."""
    path.write_bytes(pickle.dumps({"fc.weight": Payload(marker)}, protocol=protocol))
    return path


@pytest.fixture(params=["zip", "raw-protocol-2", "raw-protocol-4"])
def evil_pt(request, tmp_path, marker) -> Path:
    if request.param == "zip":
        path = _torch_zip(tmp_path / "evil.pt", marker)
    else:
        path = _raw_pickle(tmp_path / "evil.pt", marker, protocol=int(request.param[-1]))
    _live(lambda: torch.load(path, weights_only=False), marker)
    return path


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _refused_by_cli(argv, capsys, marker: Path) -> str:
    code, err = _cli(argv, capsys)
    assert code == 2, err
    assert err.startswith("ckptkd: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists()
    return err


# ---------------------------------------------------------------- foreign checkpoints (.pt/.pth/.ckpt)


def test_read_torch_state_dict_refuses_it(evil_pt, marker):
    with pytest.raises(CkptkdError, match=r"refusing to load .*could run code"):
        read_torch_state_dict(evil_pt)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_open_trajectory_and_load_model_refuse_it(tmp_path, marker, suffix, digits):
    folder = tmp_path / "foreign"
    folder.mkdir()
    path = _torch_zip(folder / f"epoch=3{suffix}", marker)
    _live(lambda: torch.load(path, weights_only=False), marker)
    ckpts = open_trajectory(folder, model="mlp_xs")  # listing a trajectory hashes files, never unpickles
    assert [c.epoch for c in ckpts] == [3]
    with pytest.raises(CkptkdError, match="refusing to load"):
        load_model(ckpts[0], digits.num_classes, digits.in_shape)
    assert not marker.exists()


def test_ckptkd_eval_refuses_it(evil_pt, marker, capsys):
    err = _refused_by_cli(["eval", evil_pt, "--model", "mlp_xs", "--data", "digits"], capsys, marker)
    assert "refusing to load" in err


def test_ckptkd_distill_refuses_it_and_writes_nothing(evil_pt, marker, tmp_path, capsys):
    out = tmp_path / "student"
    err = _refused_by_cli(["distill", "--teacher", evil_pt, "--teacher-model", "mlp_xs", "--data", "digits",
                           "--model", "mlp_xs", "--epochs", "1", "--out", out, "--quiet"], capsys, marker)
    assert "refusing to load" in err
    assert not out.exists()


def test_ckptkd_analyze_refuses_a_folder_holding_it(evil_pt, marker, tmp_path, capsys):
    folder = tmp_path / "trajectory"
    folder.mkdir()
    shutil.copy(evil_pt, folder / "epoch_5.pt")
    err = _refused_by_cli(["analyze", folder, "--model", "mlp_xs", "--data", "digits", "--quiet"], capsys, marker)
    assert "refusing to load" in err
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_5.pt"]  # no analysis written beside it


# ---------------------------------------------------------------- safetensors that are not


def test_a_safetensors_file_holding_a_pickle_is_refused(tmp_path, marker, digits, capsys):
    path = _raw_pickle(tmp_path / "weights.safetensors", marker)
    _live(lambda: pickle.loads(path.read_bytes()), marker)
    with pytest.raises(CkptkdError, match="is not a valid safetensors file"):
        load_model(open_checkpoint(path, "mlp_xs"), digits.num_classes, digits.in_shape)
    assert not marker.exists()
    err = _refused_by_cli(["eval", path, "--model", "mlp_xs", "--data", "digits"], capsys, marker)
    assert "not a valid safetensors file" in err


def test_a_run_checkpoint_swapped_for_a_pickle_is_refused_even_with_a_forged_sidecar(run_copy, marker, digits):
    ckpt = run_copy.checkpoints()[-1]
    _raw_pickle(ckpt.path, marker)
    sidecar = ckpt.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(ckpt.path.read_bytes()).hexdigest()  # as an attacker would
    sidecar.write_text(json.dumps(meta))
    _live(lambda: pickle.loads(ckpt.path.read_bytes()), marker)
    forged = [c for c in open_trajectory(run_copy.path) if c.epoch == ckpt.epoch][0]
    with pytest.raises(CkptkdError, match="is not a valid safetensors file"):
        load_model(forged, digits.num_classes, digits.in_shape)
    assert not marker.exists()


# ---------------------------------------------------------------- datasets


def test_an_npz_object_array_is_refused(tmp_path, marker):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([Payload(marker)], dtype=object), y=np.zeros(1, np.int64),
             x_test=np.zeros((1, 1, 8), np.float32), y_test=np.zeros(1, np.int64))
    _live(lambda: np.load(path, allow_pickle=True)["x"], marker)
    with pytest.raises(CkptkdError, match="cannot be read safely"):
        load_dataset(DataConfig(spec=f"npz:{path}"))
    assert not marker.exists()


def test_a_cifar_batch_holding_a_payload_is_refused_through_load_dataset(tmp_path, marker):
    from ckptkd.data.cifar import write_fake_cifar

    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder, 10, n_train=10, n_test=5)
    batch = folder / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    _live(lambda: pickle.loads(batch.read_bytes()), marker)
    with pytest.raises(CkptkdError, match="refusing to unpickle forbidden global"):
        load_dataset(DataConfig(spec=f"cifar10:{tmp_path}"))  # the parent folder, as users give it
    assert not marker.exists()


def test_a_poisoned_mnist1d_cache_file_is_not_unpickled(tmp_path, marker, monkeypatch):
    """The generated-data cache is read with allow_pickle=False; a damaged file is regenerated."""
    from ckptkd.data import sources

    monkeypatch.setenv("CKPTKD_CACHE", str(tmp_path / "cache"))
    key = hashlib.sha256(b"mnist1d-v1-200-0").hexdigest()[:16]
    poisoned = sources.cache_dir() / f"mnist1d-{key}.npz"
    np.savez(poisoned.with_suffix(""), x=np.array([Payload(marker)], dtype=object))
    assert poisoned.exists()
    _live(lambda: np.load(poisoned, allow_pickle=True)["x"], marker)
    data = load_dataset(DataConfig(spec="mnist1d", num_samples=200))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 200
    assert not marker.exists()
    with np.load(poisoned, allow_pickle=False) as z:  # the very file was read, found damaged and regenerated
        assert z["x"].dtype.kind == "f"


# ---------------------------------------------------------------- the source itself


def _calls(pattern: str) -> list[tuple[str, str]]:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(pattern, text):
            end = text.find("\n", m.end())
            hits.append((str(path.relative_to(PACKAGE.parent)), text[m.start():end]))
    return hits


def test_the_package_never_loads_unsafely():
    torch_loads = _calls(r"torch\.load\(")
    assert torch_loads, "expected the foreign-checkpoint reader"
    assert all("weights_only=True" in line for _, line in torch_loads), torch_loads
    np_loads = _calls(r"np\.load\(")
    assert all("allow_pickle=False" in line for _, line in np_loads), np_loads
    assert not _calls(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True) unpickles"
    assert not _calls(r"yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b"), "use yaml.safe_load"
    unpicklers = _calls(r"pickle\.(loads?|Unpickler)\b|\bdill\b|\bjoblib\.load|\bmarshal\.loads?")
    assert {path for path, _ in unpicklers} <= {"ckptkd/data/cifar.py"}, unpicklers  # its restricted unpickler
    assert "class _SafeUnpickler(pickle.Unpickler)" in (PACKAGE / "data" / "cifar.py").read_text()
