"""Local-folder dataset readers: CIFAR pickles (safely) and class-per-folder images."""
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from ckptkd.data.cifar import load_cifar, write_fake_cifar
from ckptkd.data.imagefolder import load_imagefolder
from ckptkd.errors import CkptkdError


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_round_trip(tmp_path, num_classes):
    expected = write_fake_cifar(tmp_path, num_classes, n_train=13, n_test=4, seed=1)
    got = load_cifar(str(tmp_path), num_classes)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    x_train, y_train, x_test, y_test = got
    assert x_train.shape == (13, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (4, 3, 32, 32) and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.max() < num_classes
    meta = "batches.meta" if num_classes == 10 else "meta"
    assert (tmp_path / meta).is_file()


def test_cifar_files_are_plain_pickles(tmp_path):
    # the fake folder must be readable by the official recipe, not just by our reader
    write_fake_cifar(tmp_path, 10, 5, 2, seed=0)
    with open(tmp_path / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert d[b"data"].shape == (1, 3072) and isinstance(d[b"labels"], list)


def test_cifar_parent_folder(tmp_path):
    a = write_fake_cifar(tmp_path / "cifar-10-batches-py", 10, 6, 2, seed=2)
    b = write_fake_cifar(tmp_path / "cifar-100-python", 100, 6, 2, seed=3)
    np.testing.assert_array_equal(load_cifar(tmp_path, 10)[0], a[0])
    np.testing.assert_array_equal(load_cifar(tmp_path, 100)[1], b[1])


def _sbs(b):
    return b"U" + bytes([len(b)]) + b


def _py2_array(a):
    # hand-written Python 2 / numpy 1 pickle of a uint8 array, as in the real downloads
    out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _sbs(b"b")
    out += b"\x87R(K\x01" + b"".join(b"M" + struct.pack("<H", s) for s in a.shape) + b"\x86"
    out += b"cnumpy\ndtype\n" + _sbs(b"u1") + b"K\x00K\x01\x87R(K\x03" + _sbs(b"|")
    out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    raw = a.tobytes()
    return out + b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tb"


def test_cifar_reads_python2_pickles(tmp_path):
    write_fake_cifar(tmp_path, 10, 5, 2, seed=0)
    x = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    blob = (b"\x80\x02}(" + _sbs(b"data") + _py2_array(x) + _sbs(b"labels")
            + b"](K\x03K\x07eu.")
    (tmp_path / "test_batch").write_bytes(blob)
    _, _, x_test, y_test = load_cifar(tmp_path, 10)
    np.testing.assert_array_equal(x_test, x.reshape(2, 3, 32, 32))
    assert y_test.tolist() == [3, 7]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("evil, global_name", [(_Evil, "io.open"), (_EvilSystem, "system")])
def test_cifar_refuses_malicious_pickle(tmp_path, evil, global_name):
    # control: the payload really does run under the plain unpickler
    control = tmp_path / "CONTROL"
    made = pickle.loads(pickle.dumps(evil(str(control)), protocol=2))
    if hasattr(made, "close"):
        made.close()
    assert control.exists()

    write_fake_cifar(tmp_path, 10, 5, 2, seed=0)
    marker = tmp_path / "MARKER"
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": evil(str(marker))}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CkptkdError) as err:
        load_cifar(tmp_path, 10)
    msg = str(err.value)
    assert "data_batch_1" in msg and "forbidden global" in msg and global_name in msg
    assert not marker.exists()


def test_cifar_refuses_codecs_other_than_latin1(tmp_path):
    write_fake_cifar(tmp_path, 10, 5, 2, seed=0)
    blob = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R."
    (tmp_path / "test_batch").write_bytes(blob)
    with pytest.raises(CkptkdError, match="test_batch.*not a readable"):
        load_cifar(tmp_path, 10)


def _rewrite(path, **changes):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    for k, v in changes.items():
        if v is None:
            del d[k.encode()]
        else:
            d[k.encode()] = v
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_cifar_errors(tmp_path):
    with pytest.raises(CkptkdError, match="does not exist"):
        load_cifar(tmp_path / "nope", 10)
    with pytest.raises(CkptkdError, match="10 or 100"):
        load_cifar(tmp_path, 20)

    d = tmp_path / "c10"
    write_fake_cifar(d, 10, 10, 2, seed=0)
    os.remove(d / "data_batch_3")
    with pytest.raises(CkptkdError, match="data_batch_3 is missing.*data_batch_1, .*test_batch"):
        load_cifar(d, 10)

    d = tmp_path / "c100"
    write_fake_cifar(d, 100, 4, 2, seed=0)
    with pytest.raises(CkptkdError, match="CIFAR-100 files but num_classes=10"):
        load_cifar(d, 10)
    os.remove(d / "test")
    with pytest.raises(CkptkdError, match="test is missing.*train, test"):
        load_cifar(d, 100)


@pytest.mark.parametrize("damage, pattern", [
    (lambda p: p.write_bytes(b"hello, not a pickle"), "not a readable CIFAR pickle"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated"),
    (lambda p: p.write_bytes(pickle.dumps([1, 2], protocol=2)), "expected a pickled dict"),
    (lambda p: _rewrite(p, labels=None), r"missing key\(s\) b'labels'"),
    (lambda p: _rewrite(p, data=np.zeros((2, 100), np.uint8)), r"shape \(N, 3072\)"),
    (lambda p: _rewrite(p, data=np.zeros((2, 3072), np.float32)), "expected a uint8"),
    (lambda p: _rewrite(p, labels=[0]), "must be 2 integers"),
    (lambda p: _rewrite(p, labels=[0, 10]), "label 10 is outside 0..9"),
    (lambda p: _rewrite(p, labels=[0, -1]), "label -1 is outside"),
])
def test_cifar_damaged_file(tmp_path, damage, pattern):
    write_fake_cifar(tmp_path, 10, 5, 2, seed=0)
    damage(tmp_path / "test_batch")
    with pytest.raises(CkptkdError, match=pattern) as err:
        load_cifar(tmp_path, 10)
    assert "test_batch" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------- ImageFolder


def _png(path, color, size=(6, 4), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _classes(root, counts, size=(6, 4)):
    for ci, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _png(root / name / f"{i}.png", (ci * 50, i * 10, 7), size)


def test_imagefolder_random_split(tmp_path):
    _classes(tmp_path, {"cat": 5, "dog": 5, "ant": 3})
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "README.txt").write_text("ignored: not inside a class folder")
    x_tr, y_tr, x_te, y_te, names = load_imagefolder(tmp_path, test_fraction=0.4, seed=0)
    assert names == ["ant", "cat", "dog"]
    assert x_tr.dtype == np.uint8 and x_tr.shape[1:] == (3, 4, 6)
    assert y_tr.dtype == np.int64
    assert len(x_tr) + len(x_te) == 13 and len(x_te) == 1 + 2 + 2
    assert sorted(set(y_te.tolist())) == [0, 1, 2]  # stratified: every class in test
    # pixel values survive: red channel encodes the class (cat written first -> 0)
    red = {"cat": 0, "dog": 50, "ant": 100}
    for x, y in zip(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])):
        assert (x[0] == red[names[y]]).all() and (x[2] == 7).all()
    again = load_imagefolder(tmp_path, test_fraction=0.4, seed=0)
    np.testing.assert_array_equal(again[0], x_tr)
    other = load_imagefolder(tmp_path, test_fraction=0.4, seed=5)
    assert len(other[2]) == 5


def test_imagefolder_train_test_and_resize(tmp_path):
    _classes(tmp_path / "train", {"b": 3, "a": 2})
    _classes(tmp_path / "test", {"b": 1, "a": 1})
    _png(tmp_path / "train" / "a" / "gray.png", 128, mode="L", size=(9, 9))
    x_tr, y_tr, x_te, y_te, names = load_imagefolder(tmp_path, size=(8, 5))
    assert names == ["a", "b"]
    assert x_tr.shape == (6, 3, 8, 5) and x_te.shape == (2, 3, 8, 5)
    assert y_tr.tolist() == [0, 0, 0, 1, 1, 1] and y_te.tolist() == [0, 1]
    assert (x_tr[2] == 128).all()  # grayscale converted to RGB
    assert load_imagefolder(tmp_path, size=3)[0].shape == (6, 3, 3, 3)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(CkptkdError, match="does not exist"):
        load_imagefolder(tmp_path / "nope")
    with pytest.raises(CkptkdError, match="no class subfolders"):
        load_imagefolder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CkptkdError, match="has no images"):
        load_imagefolder(tmp_path)

    mixed = tmp_path / "mixed"
    _png(mixed / "a" / "0.png", (1, 2, 3), size=(4, 4))
    _png(mixed / "b" / "0.png", (1, 2, 3), size=(5, 4))
    with pytest.raises(CkptkdError, match=r"differ in size.*size=\(H, W\)"):
        load_imagefolder(mixed)
    assert load_imagefolder(mixed, size=(4, 4), test_fraction=0)[0].shape == (2, 3, 4, 4)

    (mixed / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(CkptkdError, match="notes.txt: not a readable image"):
        load_imagefolder(mixed, size=(4, 4))

    split = tmp_path / "split"
    _classes(split / "train", {"a": 1, "b": 1})
    with pytest.raises(CkptkdError, match="no 'test' folder"):
        load_imagefolder(split)
    _classes(split / "test", {"a": 1, "c": 1})
    with pytest.raises(CkptkdError, match=r"only in train: \['b'\]; only in test: \['c'\]"):
        load_imagefolder(split)
    with pytest.raises(CkptkdError, match="test_fraction"):
        load_imagefolder(mixed, test_fraction=1.0)
