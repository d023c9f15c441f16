"""Streaming data: image folders and WebDataset shards left on disk, decoded per batch by
DataLoader workers, give bitwise the inputs, batches and trained models of the in-memory path."""
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ckptkd import DataConfig, KDConfig, StageConfig, load_dataset
from ckptkd.data import DATASETS, ImageFiles, list_sources, register_source, subset
from ckptkd.data.registry import _SOURCES
from ckptkd.distill import distill
from ckptkd.errors import CkptkdError
from ckptkd.io import sha256_file
from ckptkd.teacher import Teacher
from ckptkd.train import evaluate, train
from ckptkd.trajectory import Run

STAGE = StageConfig(model="mlp_xs", epochs=2, batch_size=16, lr=0.05)


def write_folder(root: Path, classes=3, per_class=20, side=8, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            pixels[..., c] //= 4  # a class signal, so that training learns something
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i:03d}.png")
    return root


def png(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(root: Path, n_train=40, n_test=12, per_shard=15, side=8, seed=0) -> Path:
    wds = pytest.importorskip("webdataset")
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        with wds.ShardWriter(str(root / split / "shard-%04d.tar"), maxcount=per_shard) as sink:
            for i in range(n):
                sink.write({"__key__": f"{i:05d}", "png": png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)),
                            "cls": str(i % 3)})
    return root


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_inputs_and_training_are_bitwise_the_in_memory_ones(folder, workers):
    mem = load_dataset(DataConfig(spec=f"imagefolder:{folder}", test_fraction=0.25))
    st = load_dataset(DataConfig(spec=f"imagefolder:{folder}", test_fraction=0.25, stream=True, workers=workers))
    assert isinstance(st.x_train, ImageFiles) and st.streaming and not mem.streaming
    assert st.in_shape == mem.in_shape == (3, 8, 8) and st.num_classes == 3
    assert torch.equal(st.x_train[torch.arange(len(mem.x_train))], mem.x_train)
    assert torch.equal(st.x_test[:], mem.x_test) and torch.equal(st.y_train, mem.y_train)
    assert torch.equal(st.x_train[5], mem.x_train[5])
    lists = [torch.tensor([7, 3, 3, 0]), torch.tensor([len(mem.x_train) - 1]), torch.tensor([1, 2])]
    assert torch.equal(st.x_val[:], mem.x_val) and torch.equal(st.y_val, mem.y_val) and len(mem.y_val) > 0
    for a, b in zip(st.batches(lists), mem.batches(lists)):
        assert torch.equal(a, b)
    assert st.augment == mem.augment and st.augment.shift and not st.augment.flip  # a folder of unknown kind: no flips
    m_mem, r_mem = train(mem, STAGE, seed=0, progress=False)
    m_st, r_st = train(st, STAGE, seed=0, progress=False)
    assert same_weights(m_mem, m_st) and r_mem["test_loss"] == r_st["test_loss"]
    assert evaluate(m_st, st.x_test, st.y_test) == evaluate(m_mem, mem.x_test, mem.y_test)


def test_streamed_distillation_with_the_teacher_cache_equals_in_memory(folder, tmp_path):
    mem = load_dataset(DataConfig(spec=f"imagefolder:{folder}"))
    st = load_dataset(DataConfig(spec=f"imagefolder:{folder}", stream=True, workers=1))
    teacher_model, _ = train(mem, StageConfig(model="mlp_s", epochs=2, batch_size=16), seed=1, progress=False)
    teacher = Teacher([teacher_model])
    a, _ = distill(mem, STAGE, teacher, KDConfig(), progress=False)
    b, _ = distill(st, STAGE, teacher, KDConfig(), progress=False, cache_dir=tmp_path / "cache")
    assert same_weights(a, b)
    assert list((tmp_path / "cache").glob("*.npy"))  # the cache holds outputs: (views, N, classes)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    assert np.load(npy).shape == (STAGE.epochs, len(st.x_train), 3)


def test_a_validation_split_is_carved_by_indices(folder):
    st = load_dataset(DataConfig(spec=f"imagefolder:{folder}", stream=True, workers=0))
    mem = load_dataset(DataConfig(spec=f"imagefolder:{folder}"))
    val = np.array([4, 0, 17])
    x_val = subset(st.x_train, val)
    assert isinstance(x_val, ImageFiles) and x_val.shape == (3, 3, 8, 8)
    assert torch.equal(x_val[:], subset(mem.x_train, val)) and torch.equal(x_val[:], mem.x_train[val])


def test_webdataset_shards_stream_and_load_alike(tmp_path):
    root = write_shards(tmp_path / "shards")
    assert len(list((root / "train").glob("*.tar"))) == 3
    st = load_dataset(DataConfig(spec=f"webdataset:{root}", stream=True, workers=1, val_fraction=0))
    mem = load_dataset(DataConfig(spec=f"webdataset:{root}", val_fraction=0))
    assert len(st.x_train) == 40 and len(st.x_test) == 12 and st.num_classes == 3
    assert torch.equal(st.x_train[:], mem.x_train) and torch.equal(st.y_train, torch.arange(40) % 3)
    m_mem, _ = train(mem, STAGE, seed=0, progress=False)
    m_st, _ = train(st, STAGE, seed=0, progress=False)
    assert same_weights(m_mem, m_st)
    # samples are numbered shard by shard in tar order: sample 17 is the 3rd of the 2nd shard
    again = load_dataset(DataConfig(spec=f"webdataset:{root}", stream=True, workers=0, augment=False, val_fraction=0))
    assert again.fingerprint == st.fingerprint and again.x_train.refs.name(17).endswith("shard-0001.tar:00017.png")


def test_webdataset_without_a_split_is_split_per_class(tmp_path):
    root = write_shards(tmp_path / "shards")
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (root / "train").glob("*.tar"):
        os.link(p, flat / p.name)
    data = load_dataset(DataConfig(spec=f"webdataset:{flat}", stream=True, workers=0, test_fraction=0.25))
    assert len(data.x_train) + len(data.x_val) == 30 and len(data.x_val) == 3 and len(data.x_test) == 10
    assert sorted(set(data.y_test.tolist())) == [0, 1, 2]


def test_sources_are_a_registry():
    assert DATASETS == ("mnist1d", "digits", "blobs", "npz:PATH", "cifar10:DIR", "cifar100:DIR", "imagefolder:DIR",
                        "webdataset:DIR", "module.path:function")

    @register_source("tiny_signals", kind="signal")
    def tiny(arg, cfg):
        rng = np.random.default_rng(cfg.seed)
        return rng.random((40, 1, 16)), np.arange(40) % 2, rng.random((10, 1, 16)), np.arange(10) % 2

    try:
        data = load_dataset("tiny_signals")
        assert data.in_shape == (1, 16) and data.augment.noise > 0  # the declared kind picks the augmentation
        assert [s.usage for s in list_sources()][-2:] == ["tiny_signals", "module.path:function"]
        with pytest.raises(CkptkdError, match="data.stream needs a source that can leave its images on disk"):
            load_dataset(DataConfig(spec="tiny_signals", stream=True))
    finally:
        del _SOURCES["tiny_signals"]
    with pytest.raises(CkptkdError, match=r"unknown dataset 'imagefoldr' \(did you mean 'imagefolder'\?\)"):
        load_dataset("imagefoldr")
    with pytest.raises(CkptkdError, match="dataset 'imagefolder' is written imagefolder:DIR"):
        load_dataset("imagefolder")


def test_a_corrupt_image_is_found_at_load_not_mid_training(tmp_path):
    root = write_folder(tmp_path / "images", per_class=4)
    (root / "c1" / "002.png").write_bytes(b"not a png")
    for stream in (True, False):
        with pytest.raises(CkptkdError, match="c1/002.png: not a readable image"):
            load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=stream, workers=1))


# ---------------------------------------------------------------- SIGKILL at a save point, then --resume

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CKPTKD_TENSORBOARD": "0"}


def _ckptkd(*args, fault: str | None = None):
    env = {**ENV, "CKPTKD_FAULT": fault} if fault else {k: v for k, v in ENV.items() if k != "CKPTKD_FAULT"}
    return subprocess.Popen([sys.executable, "-m", "ckptkd", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_streamed_distillation_killed_at_a_save_point_resumes_bitwise(tmp_path):
    root = write_folder(tmp_path / "images", per_class=16)
    data = ["--data", f"imagefolder:{root}", "--stream", "--workers", "1"]
    teacher = tmp_path / "teacher"
    assert _ckptkd("train", *data, "--model", "mlp_s", "--epochs", "2", "--batch-size", "16", "--out", str(teacher),
                   "--quiet").wait() == 0
    ckpt = str(Run(teacher).checkpoints()[-1].path)
    args = ["distill", "--teacher", ckpt, *data, "--model", "mlp_xs", "--epochs", "4", "--save-every", "1",
            "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    reference = tmp_path / "reference"
    assert _ckptkd(*args, "--out", str(reference)).wait() == 0
    resumed = tmp_path / "resumed"
    # killed by the process itself right after its 2nd save point (CKPTKD_FAULT, ckptkd/trajectory/run.py)
    killed = _ckptkd(*args, "--out", str(resumed), fault="after-save:2")
    assert killed.wait() == -signal.SIGKILL, killed.stderr.read()
    assert not Run(resumed).complete and [c.epoch for c in Run(resumed).checkpoints()] == [1, 2]
    proc = _ckptkd(*args, "--out", str(resumed), "--resume")
    assert proc.wait() == 0, proc.stderr.read()
    ref, res = Run(reference).checkpoints(), Run(resumed).checkpoints()
    assert [c.epoch for c in res] == [1, 2, 3, 4]
    assert [sha256_file(c.path) for c in res] == [sha256_file(c.path) for c in ref]
    assert Run(resumed).complete


def test_two_torchrun_ranks_each_decode_their_half_of_every_batch(tmp_path):
    """Under torchrun every rank streams only its slice of each global batch; together they
    train what one process trains in memory (up to DDP's summation order)."""
    from test_distributed import assert_same_weights, torchrun

    from ckptkd.cli import main

    root = write_folder(tmp_path / "images", per_class=16)
    # 34 training images (48 less the test and validation splits) in batches of 17: no last batch
    # that one process keeps and two ranks would drop (too small to give each rank two samples)
    args = ["train", "--data", f"imagefolder:{root}", "--model", "test_distributed:plain_mlp", "--epochs", "2",
            "--batch-size", "17", "--save-every", "1", "--device", "cpu", "--quiet"]
    torchrun([*args, "--stream", "--workers", "1", "--out", str(tmp_path / "ddp")])
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert_same_weights(Run(tmp_path / "ddp"), Run(tmp_path / "one"))


def test_workers_start_from_a_fork_server_inside_a_process_group(monkeypatch):
    """Forking beside gloo's threads once hung both ranks (``stream._worker_context``)."""
    from ckptkd.data import stream

    assert stream._worker_context() is None  # PyTorch's default: fork
    monkeypatch.setattr("torch.distributed.is_initialized", lambda: True)
    assert stream._worker_context().get_start_method() == "forkserver"
