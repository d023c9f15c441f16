"""Image files are loaded without decoding them all: checked and fingerprinted from their bytes,
decoded per batch; what only a decode can find is found mid-run, with the load's one-line
error, and --resume continues once the file is fixed. Unset, data.stream streams data that
would take more than half the available memory."""
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ckptkd import DataConfig, load_dataset
from ckptkd import data as data_module
from ckptkd.cli import main
from ckptkd.config import TrainConfig, from_dict, to_dict
from ckptkd.data import memory, stream
from ckptkd.data.index import png_size
from ckptkd.errors import CkptkdError
from ckptkd.io import sha256_file
from ckptkd.trajectory import Run
from ckptkd.trajectory.run import config_hash

REMEDY = "remove it from the dataset folder or rename it to start with '.' to hide it"


def png(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root, layout=("c0", "c1", "c2"), per_class=12, side=8, seed=0):
    rng = np.random.default_rng(seed)
    for c, sub in enumerate(layout):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            pixels[..., c % 3] //= 4
            (root / sub / f"{i:03d}.png").write_bytes(png(pixels))
    return root


def truncated(path) -> bytes:
    """The PNG at ``path`` cut short: its header (and size) intact, its pixels not decodable."""
    return path.read_bytes()[:-30]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees its warnings, though an earlier test printed the same line (warn says each once)."""
    from ckptkd import errors

    monkeypatch.setattr(errors, "_WARNED", set())


@pytest.fixture
def small_sample(monkeypatch):
    """The statistics from 4 training images, so that most images are decoded only by their batch."""
    monkeypatch.setattr(data_module, "STATS_SAMPLE", 4)


def unsampled_training_image(spec, **kw):
    """The path of a training image (not validation) that the load does not decode."""
    d = load_dataset(DataConfig(spec=spec, stream=True, workers=0, **kw))
    sampled = set(data_module.stats_sample(len(d.x_train)).tolist())
    return next(d.x_train.refs.name(i) for i in range(1, len(d.x_train)) if i not in sampled)


def test_the_load_decodes_one_image_per_split_and_the_statistics_sample(tmp_path, small_sample, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    calls = []
    real = stream.decode
    monkeypatch.setattr(stream, "decode", lambda *a: calls.append(a[2]) or real(*a))
    d = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True, workers=0))
    assert len(calls) == 2 + 4 and len(d.x_train) + len(d.x_val) + len(d.x_test) == 36
    assert data_module.stats_sample(3).tolist() == [0, 1, 2]  # all of them, up to STATS_SAMPLE
    assert data_module.stats_sample(1000)[[0, -1]].tolist() == [0, 999] and len(data_module.stats_sample(1000)) == 4


def test_streamed_and_in_memory_agree_bitwise_with_sampled_statistics(tmp_path, small_sample):
    root = write_folder(tmp_path / "imgs")
    st = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True, workers=1))
    mem = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=False))
    assert torch.equal(st.x_train[:], mem.x_train) and torch.equal(st.x_test[:], mem.x_test)
    assert torch.equal(st.x_val[:], mem.x_val) and st.fingerprint == mem.fingerprint
    full = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=False, workers=0))
    assert torch.equal(full.x_train, mem.x_train)  # workers do not change the pixels


def test_the_fingerprint_follows_the_bytes_not_the_folder(tmp_path):
    root = write_folder(tmp_path / "imgs")
    spec = f"imagefolder:{root}"
    before = load_dataset(DataConfig(spec=spec, stream=True, workers=0)).fingerprint
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert load_dataset(DataConfig(spec=f"imagefolder:{moved}", stream=True, workers=0)).fingerprint == before
    pixels = np.asarray(Image.open(root / "c1" / "005.png")).copy()
    pixels[3, 3, 0] ^= 1  # one bit of one pixel: the same size, the same file length or near it
    (root / "c1" / "005.png").write_bytes(png(pixels))
    assert load_dataset(DataConfig(spec=spec, stream=True, workers=0)).fingerprint != before


def test_headers_catch_non_images_and_other_png_sizes_at_load_without_a_decode(tmp_path, small_sample):
    root = write_folder(tmp_path / "imgs")
    spec = f"imagefolder:{root}"
    bad = unsampled_training_image(spec)  # neither a split's first image nor one of the statistics' sample
    good = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(b"not a png")
    for stream_ in (True, False):
        with pytest.raises(CkptkdError, match=rf"^{bad}: not a readable image \(UnidentifiedImageError"):
            load_dataset(DataConfig(spec=spec, stream=stream_, workers=0))
    with open(bad, "wb") as f:
        f.write(png(np.zeros((8, 9, 3), np.uint8)))
    assert png_size(open(bad, "rb").read()) == (8, 9) and png_size(good) == (8, 8)
    with pytest.raises(CkptkdError, match=rf"^images differ in size: \S+\.png and {bad}; set data"):
        load_dataset(DataConfig(spec=spec, stream=True, workers=0))
    assert load_dataset(DataConfig(spec=spec, stream=True, image_size=8)).in_shape == (3, 8, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_damaged_past_its_header_is_found_by_its_batch_with_the_load_message(tmp_path, small_sample,
                                                                                      workers):
    root = write_folder(tmp_path / "imgs")
    bad = unsampled_training_image(f"imagefolder:{root}")
    good = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(good[:-30])
    with pytest.raises(CkptkdError) as at_load:  # in memory every image is decoded at load
        load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=False, workers=workers))
    st = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True, workers=workers))
    with pytest.raises(stream.UnreadableImage) as mid_run:
        for _ in st.batches(torch.arange(len(st.x_train)).split(5)):
            pass
    assert str(mid_run.value) == str(at_load.value) and str(mid_run.value).startswith(f"{bad}: not a readable image")
    assert str(mid_run.value).endswith(REMEDY) and "\n" not in str(mid_run.value)


def test_an_image_of_another_size_found_mid_run_names_the_first(tmp_path, small_sample):
    root = write_folder(tmp_path / "imgs")
    bad = unsampled_training_image(f"imagefolder:{root}")
    st = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True, workers=0))
    Image.new("RGB", (6, 6)).save(bad, format="JPEG")  # changed after the load, in a format without a size header
    with pytest.raises(stream.UnreadableImage, match=rf"^images differ in size: {st.x_train.reference} and {bad}; "):
        st.x_train[:]


def _train_args(root, out, *flags):
    return ["train", "--data", f"imagefolder:{root}", "--model", "mlp_xs", "--epochs", "3", "--save-every", "1",
            "--batch-size", "8", "--workers", "1", "--out", str(out), "--quiet", *flags]


def test_a_bad_test_image_stops_the_run_in_one_line_and_resume_continues_from_the_last_checkpoint(tmp_path, capsys):
    layout = ("train/a", "train/b", "test/a", "test/b")
    root, fixed = write_folder(tmp_path / "imgs", layout, per_class=8), tmp_path / "fixed"
    shutil.copytree(root, fixed)
    bad = root / "test" / "b" / "003.png"
    bad.write_bytes(truncated(bad))  # test images after the first are decoded by the last epoch's evaluation
    assert main(_train_args(root, tmp_path / "run", "--stream")) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"ckptkd: error: {bad}: not a readable image (") and REMEDY in err[0]
    run = Run(tmp_path / "run")
    assert [c.epoch for c in run.checkpoints()] == [1, 2] and run.manifest["stopped_on_data"] and not run.complete
    assert main(_train_args(root, tmp_path / "run", "--stream", "--resume")) == 2  # not fixed yet: the same line
    assert capsys.readouterr().err.splitlines() == err
    shutil.copy(fixed / "test" / "b" / "003.png", bad)
    assert main(_train_args(root, tmp_path / "run", "--stream", "--resume")) == 0
    assert "resuming it on the data as it is now" in capsys.readouterr().err
    assert main(_train_args(fixed, tmp_path / "reference")) == 0  # in memory, never interrupted
    run, ref = Run(tmp_path / "run"), Run(tmp_path / "reference")
    assert run.complete and run.manifest["stopped_on_data"] is None
    assert [sha256_file(c.path) for c in run.checkpoints()] == [sha256_file(c.path) for c in ref.checkpoints()]
    assert run.manifest["data_fingerprint"] == ref.manifest["data_fingerprint"]


def test_in_a_real_process_a_bad_image_mid_run_exits_2_in_one_line(tmp_path):
    root = write_folder(tmp_path / "imgs", ("train/a", "train/b", "test/a", "test/b"), per_class=8)
    bad = root / "test" / "b" / "005.png"
    bad.write_bytes(truncated(bad))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CKPTKD_TENSORBOARD": "0"}
    # the timeout only guards against a hang; it is far above the seconds this takes
    proc = subprocess.run([sys.executable, "-m", "ckptkd", *_train_args(root, tmp_path / "run", "--stream")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"ckptkd: error: {bad}: not a readable image (" + proc.stderr.split(" (", 1)[1]
                                        .rstrip("\n")]
    assert proc.stderr.rstrip().endswith(REMEDY)


def test_a_removed_training_image_lets_the_run_resume_on_the_data_without_it(tmp_path, capsys, small_sample):
    root = write_folder(tmp_path / "imgs")
    bad = unsampled_training_image(f"imagefolder:{root}")
    with open(bad, "r+b") as f:
        f.truncate(len(f.read()) - 30)
    assert main(_train_args(root, tmp_path / "run", "--stream")) == 2
    assert capsys.readouterr().err.startswith(f"ckptkd: error: {bad}: not a readable image")
    # in memory, the same file fails the load instead
    assert main(["train", "--data", f"imagefolder:{root}", "--model", "mlp_xs", "--out", str(tmp_path / "other"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(f"ckptkd: error: {bad}: not a readable image")
    shutil.move(bad, tmp_path / "bad.png")
    assert main(_train_args(root, tmp_path / "run", "--stream", "--resume")) == 0
    assert Run(tmp_path / "run").complete


# ---------------------------------------------------------------- unset: streamed when it would not fit


def test_unset_streams_when_the_decoded_images_would_take_over_half_the_memory(tmp_path, monkeypatch, capsys):
    root = write_folder(tmp_path / "imgs")
    need = memory.decoded_bytes(36, (3, 8, 8))
    assert need == 36 * 3 * 8 * 8 * 4
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * need + 1)
    assert not load_dataset(DataConfig(spec=f"imagefolder:{root}")).streaming
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * need - 1)
    auto = load_dataset(DataConfig(spec=f"imagefolder:{root}"))
    err = capsys.readouterr().err.splitlines()
    assert auto.streaming and len(err) == 1 and err[0].startswith("ckptkd: warning: dataset 'imagefolder:")
    assert "its 36 images would take 0.00 GB decoded, more than half of the" in err[0] and "streamed" in err[0]
    forced = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=False))
    err = capsys.readouterr().err.splitlines()
    assert not forced.streaming and len(err) == 1 and "data.stream is false, so its 36 images are decoded" in err[0]
    assert load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True)).streaming
    assert capsys.readouterr().err == ""
    assert forced.fingerprint == auto.fingerprint and torch.equal(forced.x_train, auto.x_train[:])
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown: nothing streams unasked
    assert not load_dataset(DataConfig(spec=f"imagefolder:{root}")).streaming


def test_available_memory_reads_meminfo_then_the_cgroup_limit_then_sysconf(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal: 8000 kB\nMemFree: 100 kB\nMemAvailable: 4000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "CGROUP", tmp_path / "no-cgroup")
    assert memory.available_memory() == 4000 * 1024
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "memory.max").write_text("3000000\n")
    (tmp_path / "cg" / "memory.current").write_text("1000000\n")
    monkeypatch.setattr(memory, "CGROUP", tmp_path / "cg")
    assert memory.available_memory() == 2000000
    (tmp_path / "cg" / "memory.max").write_text("max\n")
    assert memory.available_memory() == 4000 * 1024
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(memory.os, "sysconf", {"SC_AVPHYS_PAGES": 10, "SC_PAGE_SIZE": 4096}.__getitem__)
    assert memory.available_memory() == 40960


def test_stream_is_unset_by_default_and_hashes_as_before(tmp_path):
    assert DataConfig().stream is None
    assert from_dict(DataConfig, {"stream": False}).stream is False
    assert from_dict(DataConfig, {"stream": None}).stream is None
    base = to_dict(TrainConfig())
    old = {**base, "data": {**base["data"], "stream": False}}  # what every config said before stream could be unset
    for value in (None, True, False):
        assert config_hash({**base, "data": {**base["data"], "stream": value}}) == config_hash(old)
    with pytest.raises(CkptkdError, match="data.stream needs a source"):
        load_dataset(DataConfig(spec="digits", stream=True))
    assert not load_dataset(DataConfig(spec="digits", stream=False)).streaming


def test_no_stream_flag_keeps_images_in_memory(tmp_path, monkeypatch, capsys):
    root = write_folder(tmp_path / "imgs")
    monkeypatch.setattr(memory, "available_memory", lambda: 1)
    assert main(["train", "--data", f"imagefolder:{root}", "--model", "mlp_xs", "--epochs", "1", "--no-stream",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "data.stream is false" in capsys.readouterr().err


def test_a_worker_that_raises_does_not_hang_the_loader(tmp_path, monkeypatch):
    """Decode errors come back as text; anything else a worker raises reaches the main process too."""
    root = write_folder(tmp_path / "imgs")
    st = load_dataset(DataConfig(spec=f"imagefolder:{root}", stream=True, workers=2))
    real = stream._Decode.__getitem__

    def broken(self, i):
        if i == 7:
            raise RuntimeError("a decoder bug")
        return real(self, i)

    monkeypatch.setattr(stream._Decode, "__getitem__", broken)  # before the workers fork: they inherit it
    with pytest.raises(RuntimeError, match="a decoder bug"):
        for _ in st.batches(torch.arange(len(st.x_train)).split(4)):
            pass


def write_shard(path, images: dict[str, bytes]):
    """One WebDataset shard (a plain tar, as webdataset writes it) of ``key -> PNG bytes`` samples."""
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, (key, data) in enumerate(images.items()):
            for field, blob in (("png", data), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


def test_a_shard_sample_is_checked_by_its_header_at_load_and_by_its_batch_after(tmp_path, small_sample):
    rng = np.random.default_rng(0)
    images = {f"{i:04d}": png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for i in range(12)}
    write_shard(tmp_path / "wds" / "test" / "shard-0000.tar", dict(list(images.items())[:4]))
    train = tmp_path / "wds" / "train" / "shard-0000.tar"
    spec = f"webdataset:{tmp_path / 'wds'}"
    write_shard(train, {**images, "0005": b"not an image"})
    with pytest.raises(CkptkdError, match=r"shard-0000.tar:0005.png: not a readable image \(.*; remove the sample"):
        load_dataset(DataConfig(spec=spec, stream=True, workers=0, val_fraction=0))
    write_shard(train, {**images, "0005": images["0005"][:-30]})  # not among the sample's [0, 4, 7, 11]
    st = load_dataset(DataConfig(spec=spec, stream=True, workers=1, val_fraction=0))
    with pytest.raises(stream.UnreadableImage, match=r"shard-0000.tar:0005.png: not a readable image"):
        for _ in st.batches(torch.arange(12).split(4)):
            pass
    write_shard(train, images)
    fixed = load_dataset(DataConfig(spec=spec, stream=True, workers=1, val_fraction=0))
    assert fixed.fingerprint != st.fingerprint and len(torch.cat(list(fixed.batches([torch.arange(12)])))) == 12
