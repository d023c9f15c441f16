"""Every bad input answered: exit status 2, one line on stderr, nothing changed on disk.

``CASES`` below is the single list of bad inputs; the table in docs/errors.md is generated
from it and a test checks the two agree. After adding or changing a case, rewrite the table:

    python tests/test_errors_table.py --write

Each case runs the CLI in a fresh folder (the working directory, so every path in a message
is relative and the messages are exact), set up from a shared template: ``run/`` is a tiny
trained ckptkd run (digits, mlp_xs, a checkpoint after each of 3 epochs) and ``good.pt`` its
last checkpoint re-saved as a plain PyTorch state_dict. In a message, ``…`` stands for text
that comes from a library (torch, safetensors, PyYAML) and may change with its version.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
START, END = "<!-- errors-table:start -->", "<!-- errors-table:end -->"


# ---------------------------------------------------------------- building bad inputs


class _Exec:
    """Unpickling this runs code: it writes ``pwned`` into MARKER (never created in these tests)."""

    def __reduce__(self):
        return (builtins.exec, ("open('MARKER', 'w').write('pwned')",))


def _npz(name, **arrays):
    """A valid 3-class dataset of 8x8 images, with ``arrays`` replacing some of it."""
    def make(tmp: Path):
        rng = np.random.default_rng(0)
        base = {"x": rng.random((30, 1, 8, 8), dtype=np.float32), "y": np.arange(30) % 3,
                "x_test": rng.random((9, 1, 8, 8), dtype=np.float32), "y_test": np.arange(9) % 3}
        base.update({k: v() if callable(v) else v for k, v in arrays.items()})
        np.savez(tmp / name, **{k: v for k, v in base.items() if v is not None})
    return make


def _text(name, content: str):
    def make(tmp: Path):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)
    return make


def _bytes(name, content: Callable[[Path], bytes]):
    def make(tmp: Path):
        (tmp / name).write_bytes(content(tmp))
    return make


def _truncate(name):
    def make(tmp: Path):
        data = (tmp / name).read_bytes()
        (tmp / name).write_bytes(data[: len(data) // 2])
    return make


def _torch_save(name, obj):
    def make(tmp: Path):
        import torch

        torch.save(obj() if callable(obj) else obj, tmp / name)
    return make


def _three_class_state():
    from ckptkd import create_model

    return create_model("mlp_xs", 3, (1, 8, 8)).state_dict()


def _evil_cifar(tmp: Path):
    from ckptkd.data.cifar import write_fake_cifar

    write_fake_cifar(tmp / "cifar", 10, n_train=10, n_test=5)
    (tmp / "cifar" / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exec()}, protocol=2))


def _object_npz(tmp: Path):
    np.savez(tmp / "objects.npz", x=np.array([_Exec()], dtype=object), y=np.arange(1), x_test=np.zeros((1, 1, 8)),
             y_test=np.arange(1))


def _mkdir(name):
    def make(tmp: Path):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    return make


def _foreign_folder(tmp: Path):
    (tmp / "foreign").mkdir()
    shutil.copy(tmp / "good.pt", tmp / "foreign" / "epoch_3.pt")


def _ckptkd_in(tmp: Path, *argv: str) -> None:
    """Run ``ckptkd ARGV`` in ``tmp`` (a setup step; it must succeed)."""
    from ckptkd.cli import main

    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        assert main(list(argv)) == 0
    finally:
        os.chdir(cwd)


def _trained_then_changed(tmp: Path):
    """``new/``: a finished ``ckptkd train`` on d.npz, whose arrays then change."""
    _npz("d.npz")(tmp)
    _ckptkd_in(tmp, "train", "--data", "npz:d.npz", "--model", "mlp_xs", "--epochs", "1", "--out", "new", "--quiet")
    _npz("d.npz", y=(np.arange(30) + 1) % 3)(tmp)  # other labels, same shapes


def _many_checkpoints(tmp: Path):
    """``many/``: ten checkpoints of a run on d.npz (27 training samples of 3 classes)."""
    _npz("d.npz")(tmp)
    _ckptkd_in(tmp, "train", "--data", "npz:d.npz", "--model", "mlp_xs", "--epochs", "10", "--save-every", "1",
               "--out", "many", "--quiet")


def _two_checkpoints(tmp: Path):
    """``two/``: a run on d.npz with two checkpoints, too short for a trajectory signal."""
    _npz("d.npz")(tmp)
    _ckptkd_in(tmp, "train", "--data", "npz:d.npz", "--model", "mlp_xs", "--epochs", "2", "--save-every", "1",
               "--out", "two", "--quiet")


def _images(name, layout=("c0", "c1"), extra: dict | None = None):
    """A folder of 8x8 PNGs, four per class folder of ``layout``; ``extra`` maps a path inside
    it to the bytes (or a function of the folder giving them) of one more file."""
    def make(tmp: Path):
        from PIL import Image

        rng = np.random.default_rng(0)
        for sub in layout:
            (tmp / name / sub).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp / name / sub / f"{i}.png")
        for rel, content in (extra or {}).items():
            (tmp / name / rel).write_bytes(content(tmp) if callable(content) else content)
    return make


def _png(h: int, w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _noise_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _shards(name, samples: int = 6, labels: bool = True, extra: dict | None = None):
    """A folder with one WebDataset shard of ``samples`` PNG + .cls samples (written with tarfile,
    as webdataset writes them); ``extra`` maps more file names in it to their bytes."""
    def make(tmp: Path):
        import tarfile

        (tmp / name).mkdir()
        with tarfile.open(tmp / name / "shard-0000.tar", "w") as tar:
            for i in range(samples):
                fields = {"png": _png(8, 8), **({"cls": str(i % 2).encode()} if labels else {})}
                for field, data in fields.items():
                    info = tarfile.TarInfo(f"{i:04d}.{field}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        for rel, content in (extra or {}).items():
            (tmp / name / rel).write_bytes(content)
    return make


def _empty_tar() -> bytes:
    import tarfile

    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    return buf.getvalue()


def _unnamed_model(tmp: Path):
    """``run/`` as a Trajectory of a model ckptkd cannot build leaves it: no architecture recorded."""
    import json

    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    (tmp / "run" / "manifest.json").write_text(json.dumps({**manifest, "model": None}))


def _unexportable(spec: str):
    """``branchy/``: a one-checkpoint run of a model from tests/unexportable_models.py (on the path under pytest)."""
    def make(tmp: Path):
        from unexportable_models import checkpoint_of

        checkpoint_of(tmp / "branchy", spec)
    return make


def _all(*steps):
    def make(tmp: Path):
        for s in steps:
            s(tmp)
    return make


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    input: str  # what is wrong, in words (markdown)
    argv: list[str]  # ckptkd's arguments, run in the prepared folder
    message: str  # the exact line after "ckptkd: error: "; "…" stands for a library's own words
    setup: Callable[[Path], None] | None = None
    simulate: str | None = None  # "readonly:FOLDER", "full" or "full:SUBSTRING" (in-process monkeypatches)
    new_files: bool = False  # the command may leave new files (never changed ones), e.g. a run that failed midway
    subprocess: bool = False  # also run as a real ``ckptkd`` process
    needs_no_cuda: bool = False

    @property
    def command(self) -> str:
        return "ckptkd " + " ".join(self.argv)


CKPT = "run/checkpoints/epoch_0003.safetensors"
BRANCHY_CKPT = "branchy/checkpoints/epoch_0001.safetensors"
EVAL = ["--model", "mlp_xs", "--data", "digits"]


def _train(*flags, data="digits", out="new"):
    return ["train", "--data", data, "--model", "mlp_xs", *flags, "--out", out, "--quiet"]


def _run(*flags, out="new"):
    return ["run", "--data", "digits", "--teacher-model", "mlp_xs", "--student-model", "mlp_xs", *flags, "--out", out,
            "--quiet"]

DATA_ERRORS = "dataset 'npz:bad.npz': "
FLAT = dict(x=np.zeros((30, 1, 64), np.float32), y=np.arange(30) % 10, x_test=np.zeros((9, 1, 64), np.float32),
            y_test=np.arange(9) % 10)  # digits' 10 classes, as 64 numbers in a row
SHAPE_ERROR = (f"checkpoint '{CKPT}' was trained on inputs of shape (1, 8, 8) but the data's are (1, 64); give the "
               "data it was trained on")

CASES: list[Case] = [
    # ------------------------------------------------ checkpoints
    Case("truncated-pt", "a truncated PyTorch checkpoint (the first half of a saved state_dict)",
         ["eval", "trunc.pt", *EVAL], "checkpoint 'trunc.pt' is truncated or not a PyTorch file (…)",
         _all(lambda t: shutil.copy(t / "good.pt", t / "trunc.pt"), _truncate("trunc.pt"))),
    Case("empty-pt", "an empty (0-byte) checkpoint file", ["eval", "empty.pt", *EVAL],
         "checkpoint 'empty.pt' is empty (0 bytes); it was not saved completely", _text("empty.pt", "")),
    Case("text-pt", "a text file named `.pt`", ["eval", "notes.pt", *EVAL],
         "checkpoint 'notes.pt' is truncated or not a PyTorch file (…)", _text("notes.pt", "epoch 3, lr 0.1\n")),
    Case("pickle-code", "a pickle checkpoint that would run code when loaded", ["eval", "evil.pt", *EVAL],
         "refusing to load 'evil.pt': it is not a plain-tensor checkpoint and loading it could run code (…); "
         "re-save it as a state_dict or safetensors",
         _bytes("evil.pt", lambda t: pickle.dumps({"fc.weight": _Exec()}, protocol=2)), subprocess=True),
    Case("foreign-no-tensors", "a foreign checkpoint that holds no tensors (`{'epoch': 3, 'lr': 0.1}`)",
         ["eval", "hparams.pt", *EVAL], "checkpoint 'hparams.pt' holds no state_dict of tensors",
         _torch_save("hparams.pt", {"epoch": 3, "lr": 0.1})),
    Case("truncated-safetensors", "a truncated checkpoint of a ckptkd run (its sidecar holds the sha256)",
         ["eval", CKPT, "--data", "digits"],
         f"checkpoint '{CKPT}' does not match the sha256 in its sidecar; it is truncated or was modified",
         _truncate(CKPT)),
    Case("empty-safetensors", "an empty `.safetensors` file", ["eval", "empty.safetensors", *EVAL],
         "checkpoint 'empty.safetensors' is empty (0 bytes); it was not saved completely",
         _text("empty.safetensors", "")),
    Case("pickle-as-safetensors", "a `.safetensors` file whose bytes are a pickle",
         ["eval", "weights.safetensors", *EVAL],
         "checkpoint 'weights.safetensors' is not a valid safetensors file (…)",
         _bytes("weights.safetensors", lambda t: pickle.dumps({"fc.weight": _Exec()}, protocol=2))),
    Case("safetensors-no-sidecar", "a `.safetensors` file without its sidecar, and no `--model`",
         ["eval", "copy.safetensors", "--data", "digits"],
         "checkpoint 'copy.safetensors' has no sidecar naming its model; say its architecture (--teacher-model / --model)",
         lambda t: shutil.copy(t / CKPT, t / "copy.safetensors")),
    Case("missing-checkpoint", "a checkpoint path that does not exist", ["eval", "nope.pt", *EVAL],
         "checkpoint 'nope.pt' does not exist"),
    Case("not-a-checkpoint", "a file that is no checkpoint format", ["eval", "notes.txt", *EVAL],
         "'notes.txt' is not a checkpoint file (.safetensors, .pt, .pth, .ckpt, .bin)", _text("notes.txt", "x")),
    Case("folder-as-checkpoint", "a folder where a checkpoint file is expected", ["eval", "run", "--data", "digits"],
         "'run' is a folder; give a checkpoint file (e.g. RUN/checkpoints/epoch_0030.safetensors)"),
    Case("foreign-without-model", "a foreign checkpoint without its architecture", ["eval", "good.pt", "--data", "digits"],
         "'good.pt' is a foreign checkpoint; say its architecture (--teacher-model / --model)"),
    Case("wrong-architecture", "a checkpoint loaded as another architecture",
         ["eval", "good.pt", "--model", "cnn1d_xs", "--data", "digits"],
         "checkpoint 'good.pt' does not match architecture 'cnn1d_xs' (24 missing keys e.g. ['features.0.0.weight', "
         "'features.0.1.bias'], 7 unexpected e.g. ['features.1.bias', 'features.1.weight']); give the architecture "
         "it was trained with"),
    Case("wrong-width", "a checkpoint loaded as a wider model with the same layer names",
         ["eval", "good.pt", "--model", "mlp_s", "--data", "digits"],
         "checkpoint 'good.pt' does not fit 'mlp_s': features.1.weight is (32, 64) but the model expects (64, 64); "
         "give the architecture and the data it was trained with"),
    Case("mismatched-classes", "a 10-class checkpoint evaluated on 3-class data",
         ["eval", CKPT, "--data", "npz:three.npz"],
         f"checkpoint '{CKPT}' was trained for 10 classes but the data has 3; give data with the classes it was "
         "trained on", _npz("three.npz")),
    Case("ensemble-incompatible", "an ensemble teacher mixing a 10-class and a 3-class checkpoint",
         ["distill", "--teacher", CKPT, "--teacher", "three.pt", "--teacher-model", "mlp_xs", "--data", "digits",
          "--model", "mlp_xs", "--out", "student", "--quiet"],
         "checkpoint 'three.pt' was trained for 3 classes but the data has 10; give data with the classes it was "
         "trained on", _torch_save("three.pt", _three_class_state)),
    Case("unknown-model", "a misspelt architecture", ["train", "--data", "digits", "--model", "mlp_xss", "--out", "new", "--quiet"],
         "unknown model 'mlp_xss' (did you mean 'mlp_xs'?); `ckptkd models` lists the registered ones"),
    Case("damaged-manifest", "a run folder whose manifest.json is damaged", ["analyze", "run", "--quiet"],
         "'run/manifest.json' is not valid JSON (…); the file is damaged", _text("run/manifest.json", '{"format": ')),
    Case("foreign-manifest", "a folder whose manifest.json belongs to another tool", ["analyze", "run", "--quiet"],
         "'run' holds a manifest.json that is not a ckptkd run", _text("run/manifest.json", '{"format": "other"}')),
    # a checkpoint and data, or a checkpoint and the model it is given, that disagree: mlp_xs flattens any
    # input of 64 numbers, so only the checkpoint's record can tell (1, 64) from digits' (1, 8, 8)
    Case("teacher-other-shape", "a checkpoint trained on digits (1, 8, 8) evaluated on data of shape (1, 64)",
         ["eval", CKPT, "--data", "npz:flat.npz"], SHAPE_ERROR, _npz("flat.npz", **FLAT)),
    Case("teacher-other-shape-distill", "a teacher trained on inputs of another shape than the data's",
         ["distill", "--teacher", CKPT, "--data", "npz:flat.npz", "--model", "mlp_xs", "--out", "student", "--quiet"],
         SHAPE_ERROR, _npz("flat.npz", **FLAT)),
    Case("trajectory-other-shape", "`ckptkd select` of a run trained on inputs of another shape than the data's",
         ["select", "run", "--policy", "val-nll-1se", "--data", "npz:flat.npz", "--quiet"],
         SHAPE_ERROR.replace("0003", "0001"), _npz("flat.npz", **FLAT)),
    Case("model-disagrees", "`--model` naming another architecture than a ckptkd checkpoint's own",
         ["eval", CKPT, "--model", "mlp_s", "--data", "digits"],
         f"'{CKPT}' was saved by ckptkd as 'mlp_xs', not 'mlp_s'; leave out --model / --teacher-model for ckptkd "
         "checkpoints (they name their own)"),
    Case("trajectory-model-disagrees", "`--model` naming another architecture than a ckptkd run's own",
         ["analyze", "run", "--model", "mlp_s", "--quiet"],
         "'run' was saved by ckptkd as 'mlp_xs', not 'mlp_s'; leave out --model / --teacher-model for ckptkd "
         "checkpoints (they name their own)"),
    Case("model-cannot-read-data", "an image network (`resnet8`) trained on 1-D signals",
         ["train", "--data", "npz:signals.npz", "--model", "resnet8", "--out", "new", "--quiet"],
         "model 'resnet8' cannot take inputs of shape (1, 16) (RuntimeError: …); choose a model for this data",
         _npz("signals.npz", x=np.zeros((30, 1, 16), np.float32), x_test=np.zeros((9, 1, 16), np.float32))),
    # ------------------------------------------------ data
    Case("one-class", "training labels that are all 0 (one class)", _train(data="npz:bad.npz"),
         DATA_ERRORS + "every training label is 0; a classifier needs at least 2 classes",
         _npz("bad.npz", y=np.zeros(30, np.int64), y_test=np.zeros(9, np.int64))),
    Case("empty-data", "a dataset with an empty training split", _train(data="npz:bad.npz"),
         DATA_ERRORS + "the train split is empty; give at least one sample per split",
         _npz("bad.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))),
    Case("nan-data", "NaN in the training inputs", _train(data="npz:bad.npz"),
         DATA_ERRORS + "train inputs contain NaN or infinite values; clean or impute them first",
         _npz("bad.npz", x=np.full((30, 1, 8, 8), np.nan, np.float32))),
    Case("inf-data", "an infinite value in the test inputs", ["eval", CKPT, "--data", "npz:bad.npz"],
         DATA_ERRORS + "test inputs contain NaN or infinite values; clean or impute them first",
         _npz("bad.npz", x_test=lambda: np.where(np.eye(8) > 0, np.inf, 0).astype(np.float32)[None, None].repeat(9, 0))),
    Case("wrong-shape", "inputs that are one number per sample (shape `(N,)`)",
         _train(data="npz:bad.npz"),
         DATA_ERRORS + "train inputs must be (N, C, L) or (N, C, H, W), got shape (30,)",
         _npz("bad.npz", x=np.zeros(30, np.float32))),
    Case("wrong-dtype", "boolean inputs", _train(data="npz:bad.npz"),
         DATA_ERRORS + "train inputs have dtype bool; use a real numeric dtype",
         _npz("bad.npz", x=np.zeros((30, 1, 8, 8), bool), x_test=np.zeros((9, 1, 8, 8), bool))),
    Case("float-labels", "labels stored as floats", _train(data="npz:bad.npz"),
         DATA_ERRORS + "train labels must be a 1-D integer array, got float64 (30,)",
         _npz("bad.npz", y=np.arange(30) % 3 * 1.0)),
    Case("negative-labels", "a negative label", _train(data="npz:bad.npz"),
         DATA_ERRORS + "train labels must be >= 0, found -1", _npz("bad.npz", y=np.arange(30) % 3 - 1)),
    Case("labels-out-of-range", "test labels beyond the classes of the training split",
         _train(data="npz:bad.npz"),
         DATA_ERRORS + "test labels go up to 7 but train labels only to 2; the splits disagree on the classes",
         _npz("bad.npz", y_test=np.arange(9) % 3 + 5)),
    Case("label-gap", "labels that are not class indices (0 and 1000: a model of 1001 outputs)",
         _train(data="npz:bad.npz"),
         DATA_ERRORS + "the training labels are 0, 1000 (2 classes), yet labels go up to 1000: no training sample "
         "has label 1, 2, 3, 4, 5, ..., so models get 1001 outputs, most of them for no class; labels must be class "
         "indices from 0 (remap them to 0..1)",
         _npz("bad.npz", y=np.arange(30) % 2 * 1000, y_test=np.arange(9) % 2 * 1000)),
    Case("label-gap-noise", "label noise on labels that skip a class (noise would flip samples into it)",
         _train("--config", "job.yaml", data="npz:bad.npz"),
         DATA_ERRORS + "the training labels are 1, 2, 3 (3 classes), yet labels go up to 3: no training sample has "
         "label 0, so models get 4 outputs, and data.label_noise would flip samples to those labels; labels must "
         "be class indices from 0 (remap them to 0..2)",
         _all(_npz("bad.npz", y=np.arange(30) % 3 + 1, y_test=np.arange(9) % 3 + 1),
              _text("job.yaml", "data:\n  label_noise: 0.2\n"))),
    Case("label-count", "fewer labels than inputs", _train(data="npz:bad.npz"),
         DATA_ERRORS + "train has 30 inputs but 29 labels", _npz("bad.npz", y=np.arange(29) % 3)),
    Case("split-shapes", "test images of another size than the training images",
         _train(data="npz:bad.npz"),
         DATA_ERRORS + "train inputs (1, 8, 8) and test inputs (1, 8, 9) differ in shape",
         _npz("bad.npz", x_test=np.zeros((9, 1, 8, 9), np.float32))),
    Case("npz-missing-arrays", "an npz file without its test arrays", _train(data="npz:bad.npz"),
         "npz file 'bad.npz' lacks arrays ['x_test', 'y_test']; it needs x, y, x_test, y_test",
         _npz("bad.npz", x_test=None, y_test=None)),
    Case("npz-object-array", "an npz file holding a pickled object array",
         _train(data="npz:objects.npz"),
         "npz file 'objects.npz' cannot be read safely (…); save plain numeric arrays", _object_npz),
    Case("npz-missing", "an npz path that does not exist", _train(data="npz:nope.npz"),
         "npz file 'nope.npz' does not exist"),
    Case("unknown-dataset", "a misspelt dataset name", _train(data="digts"),
         "unknown dataset 'digts' (did you mean 'digits'?); use one of mnist1d, digits, blobs, npz:PATH, cifar10:DIR, "
         "cifar100:DIR, imagefolder:DIR, webdataset:DIR, module.path:function"),
    Case("dataset-without-path", "a dataset that needs a folder, given without one", _train(data="imagefolder"),
         "dataset 'imagefolder' is written imagefolder:DIR"),
    Case("cifar-missing", "a CIFAR folder that does not exist", _train(data="cifar10:nope"),
         "CIFAR folder 'nope' does not exist (or is not a folder); pass the folder that holds the extracted "
         "'python version' files (or its parent)"),
    Case("cifar-pickle-code", "a CIFAR batch file that is a pickle which would run code",
         _train(data="cifar10:cifar"),
         "cifar/data_batch_1: refusing to unpickle forbidden global __builtin__.exec; a CIFAR batch holds only arrays "
         "and lists, so this file is not a genuine CIFAR file (it may be malicious) - replace it with the official "
         "download", _evil_cifar),
    Case("imagefolder-missing", "an image folder that does not exist", _train("--stream", data="imagefolder:nope"),
         "image folder 'nope' does not exist (or is not a folder); pass the folder that holds one subfolder per class"),
    Case("corrupt-image", "a corrupt image in a streamed image folder (found when the data is loaded, before "
         "training)", _train("--stream", data="imagefolder:imgs"),
         "imgs/c1/bad.png: not a readable image (…); remove it from the dataset folder or rename it to start with "
         "'.' to hide it", _images("imgs", extra={"c1/bad.png": b"not a png"})),
    Case("image-sizes-differ", "images of different sizes without `data.image_size`",
         _train("--stream", data="imagefolder:imgs"),
         "images differ in size: imgs/train/c0/0.png and imgs/train/c1/wide.png; set data.image_size to resize "
         "them all", _images("imgs", ("train/c0", "train/c1", "test/c0", "test/c1"),
                             {"train/c1/wide.png": lambda t: _png(8, 9)})),
    Case("image-damaged-mid-run", "a streamed image whose header reads but whose pixels do not: found by the batch "
         "that decodes it (here the last epoch's test evaluation), mid-run; the run records it, and once the file is "
         "fixed or removed `--resume` continues from the last checkpoint",
         _train("--stream", "--epochs", "1", data="imagefolder:imgs"),
         "imgs/test/c1/2.png: not a readable image (…); remove it from the dataset folder or rename it to start with "
         "'.' to hide it", _images("imgs", ("train/c0", "train/c1", "test/c0", "test/c1"),
                                   {"test/c1/2.png": lambda t: _noise_png()[:-30]}), new_files=True),
    Case("stream-in-memory-source", "`--stream` with a dataset that is only loaded into memory",
         _train("--stream"), "data.stream needs a source that can leave its images on disk (imagefolder:DIR, "
         "webdataset:DIR), not 'digits'"),
    Case("negative-workers", "a negative number of decoding workers", _train("--workers", "-1"),
         "data.workers must be >= 0, got -1"),
    Case("webdataset-missing", "a WebDataset folder that does not exist", _train(data="webdataset:nope"),
         "webdataset folder 'nope' does not exist (or is not a folder); pass the folder that holds the .tar shards "
         "(or train/ and test/ folders of them)"),
    Case("no-shards", "a WebDataset folder without `.tar` shards", _train("--stream", data="webdataset:notes"),
         "'notes' holds no .tar shards; write the samples as WebDataset .tar files there",
         _text("notes/todo.txt", "x")),
    Case("empty-shard", "an empty WebDataset shard (a tar with no members)", _train("--stream", data="webdataset:wds"),
         "shard 'wds/shard-0001.tar' holds no samples; remove it, or write samples (an image and a .cls) to it",
         _shards("wds", extra={"shard-0001.tar": _empty_tar()})),
    Case("shard-not-tar", "a `.tar` shard that is not a tar file", _train("--stream", data="webdataset:wds"),
         "shard 'wds/shard-0001.tar' is not a readable uncompressed tar file (…); write shards as plain .tar",
         _shards("wds", extra={"shard-0001.tar": b"hello"})),
    Case("shard-without-labels", "a shard whose samples have no `.cls` label", _train("--stream", data="webdataset:wds"),
         "sample '0000' of shard 'wds/shard-0000.tar' has no .cls label; every sample needs its class number as a "
         ".cls member", _shards("wds", labels=False)),
    # ------------------------------------------------ configs and flags
    Case("misspelt-key", "a misspelt key in a config file (`teacher: {epoch: 3}`)", ["run", "job.yaml"],
         "unknown config key 'teacher.epoch' (did you mean 'epochs'?)", _text("job.yaml", "teacher:\n  epoch: 3\n")),
    Case("misspelt-section", "a misspelt section in a config file (`studnet:`)", ["run", "job.yaml"],
         "unknown config key 'studnet' (did you mean 'student'?)", _text("job.yaml", "studnet:\n  epochs: 3\n")),
    Case("wrong-type", "a config value of the wrong type (`epochs: ten`)", ["run", "job.yaml"],
         "config key 'teacher.epochs' must be int, got 'ten'", _text("job.yaml", "teacher:\n  epochs: ten\n")),
    Case("invalid-yaml", "a config file that is not YAML", ["run", "job.yaml"],
         "config file 'job.yaml' is not valid YAML (…)", _text("job.yaml", "teacher: {epochs: 3\n")),
    Case("missing-config", "a config file that does not exist", ["run", "nope.yaml"],
         "config file 'nope.yaml' does not exist"),
    Case("config-is-a-folder", "a folder given as the config file", ["run", "run"],
         "config file 'run' cannot be read (Is a directory)"),
    Case("config-not-a-mapping", "a config file holding a list, not sections", ["run", "job.yaml"],
         "config file 'job.yaml' must be a mapping of sections, got list", _text("job.yaml", "- teacher\n- student\n")),
    Case("config-nested-too-deeply", "a config file nested thousands of levels deep", ["run", "job.yaml"],
         "config file 'job.yaml' is nested too deeply to be a ckptkd config",
         _text("job.yaml", "seed: " + "[" * 700 + "]" * 700 + "\n")),
    Case("section-config-not-a-mapping", "`--config` of a command that reads one section, holding a list",
         ["analyze", "run", "--config", "job.yaml", "--quiet"],
         "config file 'job.yaml' must be a mapping of sections, got list", _text("job.yaml", "- info\n")),
    Case("zero-epochs", "zero epochs", _train("--epochs", "0"),
         "train.epochs must be a positive integer, got 0"),
    Case("negative-epochs", "negative epochs in a config file", ["run", "job.yaml"],
         "teacher.epochs must be a positive integer, got -3", _text("job.yaml", "teacher:\n  epochs: -3\n")),
    Case("batch-size-one", "a batch size of 1", _train("--batch-size", "1"),
         "train.batch_size must be at least 2 (BatchNorm needs it), got 1"),
    Case("zero-batch-size", "a batch size of 0 for the student, in a config file", ["run", "job.yaml"],
         "student.batch_size must be at least 2 (BatchNorm needs it), got 0",
         _text("job.yaml", "student:\n  batch_size: 0\n")),
    Case("negative-lr", "a negative learning rate", _train("--lr", "-0.1"),
         "train.lr must be positive, got -0.1"),
    Case("infinite-lr", "an infinite learning rate", _train("--lr", "inf"),
         "config key 'train.lr' must be a finite number, got inf"),
    Case("nan-in-config", "NaN in a config file (`lr: .nan`)", ["run", "job.yaml"],
         "config key 'teacher.lr' must be a finite number, got nan", _text("job.yaml", "teacher:\n  lr: .nan\n")),
    Case("zero-temperature", "a KD temperature of 0", _run("--temperature", "0"),
         "kd.temperature must be positive, got 0.0"),
    Case("negative-temperature", "a negative KD temperature",
         ["distill", "--teacher", CKPT, "--data", "digits", "--temperature", "-2", "--out", "student", "--quiet"],
         "kd.temperature must be positive, got -2.0"),
    Case("alpha-above-one", "alpha above 1", _run("--alpha", "1.5"),
         "kd.alpha must be in [0, 1], got 1.5"),
    Case("alpha-below-zero", "alpha below 0",
         ["distill", "--teacher", CKPT, "--data", "digits", "--alpha=-0.1", "--out", "student", "--quiet"],
         "kd.alpha must be in [0, 1], got -0.1"),
    Case("misspelt-augment", "an augmentation that is not one of the choices", _train("--augment", "flip"),
         "data.augment must be one of none, shift, shift+flip, default, got 'flip' (did you mean 'shift+flip'?)"),
    Case("augment-in-config", "a config file asking for an augmentation that does not exist", ["run", "job.yaml"],
         "data.augment must be one of none, shift, shift+flip, default, got 'mirror'",
         _text("job.yaml", "data:\n  augment: mirror\n")),
    Case("eval-bad-combine", "`ckptkd eval` with an unknown ensemble rule (checked with or without `--ensemble`)",
         ["eval", CKPT, "--data", "digits", "--combine", "mean"],
         "kd.combine must be one of logits, probs, got 'mean'"),
    Case("bad-combine", "an unknown ensemble rule",
         ["distill", "--teacher", CKPT, "--data", "digits", "--combine", "mean", "--out", "student", "--quiet"],
         "kd.combine must be one of logits, probs, got 'mean'"),
    Case("misspelt-method", "a misspelt distillation method",
         ["distill", "--teacher", CKPT, "--data", "digits", "--method", "dkdd", "--out", "student", "--quiet"],
         "unknown kd.method 'dkdd' (did you mean 'dkd'?); registered methods: kd, dkd, fitnet"),
    Case("study-misspelt-method", "a study config naming a method that is not registered", ["study", "study.yaml"],
         "unknown kd.method 'mixup'; registered methods: kd, dkd, fitnet",
         _text("study.yaml", "name: s\nkd:\n  method: mixup\n")),
    Case("method-param-wrong-type", "a method parameter of the wrong type, in a config file", _run("--config", "job.yaml"),
         "config key 'kd.dkd.beta' must be float, got 'high'", _text("job.yaml", "kd:\n  method: dkd\n  dkd:\n    beta: high\n")),
    Case("method-param-negative", "a negative method parameter, in a config file",
         ["distill", "--teacher", CKPT, "--data", "digits", "--config", "job.yaml", "--out", "student", "--quiet"],
         "kd.dkd.warmup must be >= 0, got -1", _text("job.yaml", "kd:\n  method: dkd\n  dkd:\n    warmup: -1\n")),
    Case("method-section-not-mapping", "a method's section that is not a mapping", _run("--config", "job.yaml"),
         "config section 'kd.fitnet' must be a mapping, got int", _text("job.yaml", "kd:\n  fitnet: 3\n")),
    Case("alpha-with-dkd", "`--alpha` (Hinton KD's weight) with a method that does not read it",
         ["distill", "--teacher", CKPT, "--data", "digits", "--method", "dkd", "--alpha", "0.5", "--out", "student",
          "--quiet"],
         "--alpha is not read by kd.method dkd; set its own parameters in the config section kd.dkd (--config)"),
    Case("temperature-with-fitnet", "`--temperature` with the feature method, which reads no temperature",
         _run("--method", "fitnet", "--temperature", "2"),
         "--temperature is not read by kd.method fitnet; set its own parameters in the config section kd.fitnet "
         "(--config)"),
    Case("fitnet-ensemble", "a feature method (fitnet) with an ensemble teacher",
         ["distill", "--teacher", CKPT, "--teacher", CKPT, "--data", "digits", "--method", "fitnet", "--out", "student",
          "--quiet"],
         "kd.method fitnet learns from one teacher's features, got an ensemble of 2 checkpoints; use one checkpoint, "
         "or a logit method (kd, dkd)"),
    Case("run-fitnet-k2", "`ckptkd run` with a feature method and a snapshot ensemble (-k 2)",
         _run("--method", "fitnet", "-k", "2"),
         "kd.method fitnet learns from one teacher's features, got an ensemble of 2 checkpoints; use one checkpoint, "
         "or a logit method (kd, dkd)"),
    Case("run-over-budget", "`ckptkd run` with a policy that would spend more than --budget (refused before the "
         "teacher trains)", _run("--policy", "proxy", "--budget", "0.1"),
         "policy proxy would spend 2.00 distillations (10 candidates x 0.20 of the student's epochs x 1.00 of its "
         "training data) and the budget is 0.10; raise --budget (select.budget) to 2.00 or more, or lower "
         "select.proxy.epoch_fraction or select.proxy.data_fraction, or save fewer checkpoints"),
    Case("run-fitnet-explicit-two", "`ckptkd run` with a feature method and policy explicit of two epochs",
         _run("--method", "fitnet", "--policy", "explicit", "--checkpoints", "3", "6"),
         "kd.method fitnet learns from one teacher's features, got an ensemble of 2 checkpoints; use one checkpoint, "
         "or a logit method (kd, dkd)"),
    Case("misspelt-estimator", "a misspelt estimator", _run("--estimator", "kdee"),
         "info.estimator must be one of kde, renyi, categorical, binning, got 'kdee' (did you mean 'kde'?)"),
    Case("misspelt-policy", "a misspelt selection policy", _run("--policy", "bset-val"),
         "select.policy must be one of last, halfway, best-val, val-nll, val-nll-1se, mi, mi-val, iyf, iyf-val, proxy, "
         "proxy-full, aum-fit, cl-fit, label-wave, knn-student, val-nll-knn, kd-nll-1se, kd-nll-knn, explicit "
         "(or a+b), got 'bset-val' "
         "(did you mean 'best-val'?)"),
    Case("select-misspelt-policy", "a misspelt policy for `ckptkd select`", ["select", "run", "--policy", "val-nl"],
         "unknown policy 'val-nl' (did you mean 'val-nll'?); use one of last, halfway, best-val, val-nll, val-nll-1se, "
         "mi, mi-val, iyf, iyf-val, proxy, proxy-full, aum-fit, cl-fit, label-wave, knn-student, val-nll-knn, "
         "kd-nll-1se, kd-nll-knn, explicit (ckptkd policies describes them)"),
    Case("explicit-without-epochs", "policy `explicit` without the epochs to use",
         ["select", "run", "--policy", "explicit"],
         "policy explicit needs the epochs to use (select.checkpoints, or --checkpoints E ...)"),
    Case("ambiguous-union", "a union with `explicit` and `-k` above 1",
         ["select", "run", "--policy", "explicit+last", "--checkpoints", "1", "-k", "2"],
         "policy 'explicit+last' with k=2 is ambiguous: explicit gives its epochs whatever k is; use k=1, or list "
         "every epoch under explicit"),
    Case("repeated-union-part", "a union that names a policy twice", ["select", "run", "--policy", "last+last"],
         "policy 'last+last' names 'last' twice; a union needs distinct policies"),
    Case("val-policy-without-val", "a policy that reads the validation split, with `data.val_fraction: 0`",
         ["select", "run", "--policy", "best-val", "--config", "noval.yaml"],
         "policy best-val needs a validation split; set data.val_fraction > 0 (e.g. 0.1)",
         _text("noval.yaml", "data:\n  spec: digits\n  val_fraction: 0\n")),
    Case("proxy-without-student", "policy `proxy` on a run that names no student", ["select", "run", "--policy", "proxy"],
         "policy proxy needs the student's training settings: a student section in --config, or --student-model "
         "(SelectionContext(student=...) in Python)"),
    Case("proxy-full-too-little-data", "policy `proxy-full` where 1/n of the training data holds fewer samples "
         "than classes", ["select", "many", "--policy", "proxy-full", "--student-model", "mlp_xs"],
         "policy proxy-full gives each of the 10 candidates 1/10 of the 27 training samples, fewer than one per "
         "class; save fewer checkpoints (a larger save_every) or use policy proxy", _many_checkpoints),
    Case("budget-negative", "a negative selection budget (`--budget -1`)", ["select", "run", "--budget", "-1"],
         "argument --budget: must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), got '-1'; "
         "see ckptkd select --help"),
    Case("budget-not-a-number", "a selection budget that is not a number (`--budget lots`)",
         _run("--budget", "lots"), "argument --budget: must be a number of full distillations >= 0 (e.g. 1; 0 "
         "means probes only), got 'lots'; see ckptkd run --help"),
    Case("budget-negative-in-config", "a negative `select.budget` in a config file", _run("--config", "job.yaml"),
         "select.budget must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), got -0.5",
         _text("job.yaml", "select:\n  budget: -0.5\n")),
    Case("budget-too-small", "a policy that would spend more than `--budget` allows (proxy students at budget 0.5)",
         ["select", "run", "--policy", "proxy", "--student-model", "mlp_xs", "--student-epochs", "2",
          "--budget", "0.5"],
         "policy proxy would spend 1.50 distillations (3 candidates x 0.50 of the student's epochs x 1.00 of its "
         "training data) and the budget is 0.50; raise --budget (select.budget) to 1.50 or more, or lower "
         "select.proxy.epoch_fraction or select.proxy.data_fraction, or save fewer checkpoints"),
    Case("trajectory-too-short", "a trajectory signal (`aum-fit`) on a run of two checkpoints",
         ["select", "two", "--policy", "aum-fit", "--data", "npz:d.npz"],
         "policy aum-fit reads the trajectory and needs at least 3 checkpoints, got 2; save more often (a smaller "
         "save_every) or use a policy that scores single checkpoints (e.g. val-nll-1se)", _two_checkpoints),
    Case("val-fraction-one", "a validation split of the whole training set", _run("--config", "job.yaml"),
         "data.val_fraction must be in [0, 1), got 1.0", _text("job.yaml", "data:\n  val_fraction: 1\n")),
    Case("noise-kind-unknown", "a label noise kind that does not exist", _run("--config", "job.yaml"),
         "data.label_noise_kind must be one of symmetric, pair, instance, got 'pairs' (did you mean 'pair'?)",
         _text("job.yaml", "data:\n  label_noise: 0.2\n  label_noise_kind: pairs\n")),
    Case("pair-noise-half", "pair noise on half the labels (the wrong class would be the majority)",
         _run("--config", "job.yaml"), "data.label_noise must be below 0.5 for pair noise (at 0.5 the flipped "
         "class outnumbers the true one), got 0.5",
         _text("job.yaml", "data:\n  label_noise: 0.5\n  label_noise_kind: pair\n")),
    Case("val-fraction-leaves-nothing", "a validation split that leaves no training sample",
         ["train", "--config", "job.yaml", "--model", "mlp_xs", "--out", "new", "--quiet"],
         DATA_ERRORS + "data.val_fraction 0.99 leaves no training samples out of 30; lower it",
         _all(_npz("bad.npz"), _text("job.yaml", "data:\n  spec: npz:bad.npz\n  val_fraction: 0.99\n"))),
    Case("estimator-parameter", "an estimator parameter out of range (`info.renyi.alpha: 1`)",
         _run("--config", "job.yaml"), "info.renyi.alpha must be positive and not 1, got 1.0",
         _text("job.yaml", "info:\n  renyi:\n    alpha: 1\n")),
    Case("proxy-epoch-fraction", "a proxy with no epochs (`select.proxy.epoch_fraction: 0`)",
         _run("--config", "job.yaml"), "select.proxy.epoch_fraction must be in (0, 1], got 0.0",
         _text("job.yaml", "select:\n  proxy:\n    epoch_fraction: 0\n")),
    Case("bad-flag-value", "a flag value of the wrong type", _train("--epochs", "ten"),
         "argument --epochs: invalid int value: 'ten'; see ckptkd train --help", subprocess=True),
    Case("unknown-flag", "a flag that does not exist", _train("--lrr", "0.1"),
         "unrecognized arguments: --lrr 0.1; see ckptkd --help"),
    Case("seed-without-effect", "`--seed` on a command that draws nothing at random (eval; analyze has "
         "`--probe-seed`)", ["eval", "run/checkpoints/epoch_0003.safetensors", "--seed", "3"],
         "unrecognized arguments: --seed 3; see ckptkd --help"),
    # flags that would have no effect in the case at hand (ckptkd/cli/flags.py)
    Case("select-seed-without-proxy", "`select --seed` (the proxy student's seed) with a policy that trains no "
         "student", ["select", "run", "--policy", "val-nll-1se", "--seed", "3"],
         "--seed has no effect here: it sets the proxy student, and policy val-nll-1se trains none (only proxy, "
         "proxy-full do), nor does the verdict on distilling here (selection has no student settings); drop it"),
    Case("select-student-without-proxy", "`select --student-model` with a policy that trains no student, and no "
         "budget for the verdict's proxy students", ["select", "run", "--policy", "best-val", "--student-model",
                                                      "mlp_s", "--budget", "0"],
         "--student-model has no effect here: it sets the proxy student, and policy best-val trains none (only "
         "proxy, proxy-full do), nor does the verdict on distilling here (2 paired proxy seeds would spend 0.80 "
         "distillations and the budget leaves 0.00); drop it"),
    Case("select-checkpoints-without-explicit", "`select --checkpoints` with a policy other than explicit",
         ["select", "run", "--policy", "last", "--checkpoints", "2"],
         "--checkpoints has no effect here: it lists the epochs of policy explicit, and policy last chooses its "
         "own; drop it"),
    Case("select-k-with-explicit", "`-k 2` with policy explicit alone", ["select", "run", "--policy", "explicit",
         "--checkpoints", "2", "-k", "2"],
         "-k has no effect here: policy explicit takes the epochs of --checkpoints, however many -k asks for; drop it"),
    Case("select-min-spacing-one-pick", "`--min-spacing` with `-k 1`", ["select", "run", "--policy", "last",
         "--min-spacing", "2"],
         "--min-spacing has no effect here: it spaces the picks of a snapshot ensemble, and -k 1 makes one pick; "
         "drop it"),
    Case("select-data-for-epochs-alone", "`select --data` with a policy that reads only the epochs",
         ["select", "run", "--policy", "halfway", "--data", "digits"],
         "--data has no effect here: policy halfway reads only the checkpoints' epochs, no data and no model; drop it"),
    Case("select-budget-for-epochs-alone", "`select --budget` with a policy that reads only the epochs (it spends "
         "nothing, and no verdict is compared)", ["select", "run", "--policy", "last", "--budget", "0.5"],
         "--budget has no effect here: policy last reads only the checkpoints' epochs, no data and no model; drop it"),
    Case("select-probe-without-analysis", "an information-estimate flag with a policy that reads no estimate",
         ["select", "run", "--policy", "best-val", "--probe-size", "50"],
         "--probe-size has no effect here: policy best-val reads no information estimate (only mi, mi-val, iyf, "
         "iyf-val do); drop it"),
    Case("select-scaling-raw-estimates", "`--scaling` with a policy that reads a raw estimate",
         ["select", "run", "--policy", "iyf", "--scaling", "raw"],
         "--scaling has no effect here: policy iyf reads raw estimates, not the scaled score (only mi, mi-val do); "
         "drop it"),
    Case("tau-without-softmax", "`--tau` when neither the features nor the estimator read a softmax",
         ["analyze", "run", "--tau", "2", "--quiet"],
         "--tau has no effect here: it is the softmax temperature of --features softmax and --estimator "
         "categorical, and this analysis uses --features penultimate with --estimator kde; drop it"),
    Case("run-checkpoints-without-explicit", "`run --checkpoints` with a policy other than explicit",
         _run("--policy", "val-nll-1se", "--checkpoints", "2"),
         "--checkpoints has no effect here: it lists the epochs of policy explicit, and policy val-nll-1se chooses "
         "its own; drop it"),
    Case("run-probe-without-analysis", "`run --probe-size` with a policy that reads no estimate",
         _run("--policy", "val-nll-1se", "--probe-size", "50"),
         "--probe-size has no effect here: policy val-nll-1se reads no information estimate (only mi, mi-val, iyf, "
         "iyf-val do); drop it"),
    Case("milestones-without-multistep", "`--milestones` under the cosine schedule", _train("--milestones", "2"),
         "--milestones has no effect here: they are the epochs of the multistep schedule, and train.schedule is "
         "cosine (pass --schedule multistep); drop it"),
    Case("workers-without-images", "`--workers` for a dataset of arrays (nothing to decode)",
         _train("--workers", "2"),
         "--workers has no effect here: they decode image files (imagefolder:DIR, webdataset:DIR), and dataset "
         "'digits' holds none; drop it"),
    Case("combine-one-teacher", "`distill --combine` with a single teacher",
         ["distill", "--teacher", CKPT, "--data", "digits", "--combine", "probs", "--out", "student", "--quiet"],
         "--combine has no effect here: it combines the members of an ensemble, and one --teacher was given; "
         "drop it"),
    Case("eval-combine-without-ensemble", "`eval --combine` without `--ensemble`",
         ["eval", CKPT, "--data", "digits", "--combine", "probs"],
         "--combine has no effect here: it is the rule of --ensemble, which was not given; drop it, or add "
         "--ensemble"),
    Case("eval-quiet", "`eval --quiet` (eval shows no progress bar)", ["eval", CKPT, "--data", "digits", "--quiet"],
         "unrecognized arguments: --quiet; see ckptkd --help"),
    Case("resume-and-overwrite", "`--resume` and `--overwrite` together", _train("--resume", "--overwrite", out="run"),
         "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite "
         "replaces it; pass one"),
    Case("run-k-with-explicit", "`run -k 2` with policy explicit alone",
         _run("--policy", "explicit", "--checkpoints", "2", "-k", "2"),
         "-k has no effect here: policy explicit takes the epochs of --checkpoints, however many -k asks for; drop it"),
    Case("bad-device-name", "a device name that is not one", _train("--device", "gpu"),
         "device must be auto, cpu or cuda[:N], got 'gpu'"),
    Case("missing-gpu", "`--device cuda` on a machine without a GPU", _train("--device", "cuda"),
         "device 'cuda' asked for, but this torch sees no CUDA GPU; use --device cpu", needs_no_cuda=True),
    Case("zero-k", "`-k 0` checkpoints to select", ["select", "run", "-k", "0", "--policy", "last"],
         "-k must be at least 1 and --min-spacing at least 0, got -k 0 --min-spacing 0"),
    Case("k-too-large", "`-k` larger than the trajectory (refused before any analysis is written)",
         ["select", "run", "-k", "5", "--probe-size", "50"],
         "cannot pick 5 checkpoints: the trajectory allows at most 3; lower -k or --min-spacing"),
    Case("k-spacing-too-wide", "`-k` checkpoints that `--min-spacing` cannot fit",
         ["select", "run", "-k", "2", "--min-spacing", "3", "--probe-size", "50"],
         "cannot pick 2 checkpoints at least 3 epochs apart: the trajectory allows at most 1; lower -k or "
         "--min-spacing"),
    Case("study-budget-negative", "a negative budget for a study (`--budget -2`)",
         ["study", "study.yaml", "--budget", "-2", "--out", "new"],
         "argument --budget: must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), got '-2'; "
         "see ckptkd study --help", _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("study-budget-in-config", "a negative `budget` in a study config", ["study", "study.yaml", "--out", "new"],
         "budget must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), got -1.0",
         _text("study.yaml", "name: tiny\ndata: {spec: digits}\nbudget: -1\n")),
    Case("study-budget-sweep-negative", "a negative value in a study's `budget_sweep`",
         ["study", "study.yaml", "--out", "new"],
         "each budget_sweep value must be a number of full distillations >= 0 (e.g. 1; 0 means probes only), "
         "got -0.5", _text("study.yaml", "name: tiny\ndata: {spec: digits}\nbudget_sweep: [0.5, -0.5]\n")),
    Case("zero-jobs", "`--jobs 0` for a study", ["study", "study.yaml", "--jobs", "0", "--out", "new"],
         "--jobs must be at least 1, got 0", _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("unknown-executor", "an unknown `--executor` for a study", ["study", "study.yaml", "--executor", "rey",
                                                                        "--out", "new"],
         "unknown executor 'rey' (did you mean 'ray'?); use one of local, ray",
         _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("jobs-with-ray", "`--jobs` with `--executor ray` (Ray sizes itself)",
         ["study", "study.yaml", "--executor", "ray", "--jobs", "2", "--out", "new"],
         "--jobs 2 does not apply to --executor ray: Ray runs as many cells at once as the cluster has CPUs for "
         "(resources.num_cpus per cell); leave --jobs out", _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("address-without-ray", "`--address` with the local executor",
         ["study", "study.yaml", "--address", "10.0.0.1:6379", "--out", "new"],
         "--address names a Ray cluster; add --executor ray, or leave --address out",
         _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("gpus-without-ray", "`--num-gpus` with the local executor",
         ["study", "study.yaml", "--num-gpus", "1", "--out", "new"],
         "--num-gpus sizes a cell on a Ray cluster; add --executor ray, or use --jobs locally",
         _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    Case("address-not-host-port", "an `--address` that is not HOST:PORT",
         ["study", "study.yaml", "--executor", "ray", "--address", "headnode", "--out", "new"],
         "--address 'headnode' is not HOST:PORT; give the address `ray start --head` printed (e.g. 10.0.0.1:6379), "
         "ray://HOST:10001, or auto", _text("study.yaml", "name: tiny\ndata: {spec: digits}\n")),
    # ------------------------------------------------ output folders
    Case("different-run", "an output folder that holds a different run", _train(out="run"),
         "output folder 'run' already holds a different run; pass --resume to continue it, --overwrite to replace "
         "it, or choose another --out"),
    Case("resume-different-config", "`--resume` on a run with another config", _train("--resume", out="run"),
         "'run' holds a run with a different config; --resume needs the same config, or pass --overwrite to "
         "replace it"),
    Case("resume-other-data", "`--resume` of a run whose data changed since it started (same config, other arrays)",
         ["train", "--data", "npz:d.npz", "--model", "mlp_xs", "--epochs", "1", "--out", "new", "--quiet", "--resume"],
         "'new' was started on other data (fingerprint …, the data now …); --resume needs the same data, or pass "
         "--overwrite to start again", _trained_then_changed),
    Case("foreign-out-folder", "an output folder holding other files", _train(out="notes"),
         "output folder 'notes' already holds files that are not a ckptkd run; pass --resume to continue it, "
         "--overwrite to replace it, or choose another --out", _text("notes/todo.txt", "x")),
    Case("overwrite-foreign-folder", "`--overwrite` on a folder holding other files",
         _train("--overwrite", out="notes"),
         "refusing to --overwrite 'notes': it holds files that are not a ckptkd run", _text("notes/todo.txt", "x")),
    Case("study-out-is-a-file", "a study folder that is a file", ["study", "study.yaml", "--out", "notes.txt"],
         "output folder 'notes.txt' is a file; choose a folder for --out",
         _all(_text("study.yaml", "name: tiny\ndata: {spec: digits}\n"), _text("notes.txt", "x"))),
    Case("study-out-foreign", "a study folder holding other files", ["study", "study.yaml", "--out", "notes"],
         "study folder 'notes' is not empty and holds no study; choose another --out",
         _all(_text("study.yaml", "name: tiny\ndata: {spec: digits}\n"), _text("notes/todo.txt", "x"))),
    Case("run-into-train-run", "`ckptkd run` into the folder of a `ckptkd train` run", _run(out="run"),
         "output folder 'run' holds a single training run (ckptkd train or distill), not the output of ckptkd "
         "run; choose another --out"),
    Case("out-is-a-file", "an output path that is a file", _train(out="notes.txt"),
         "output folder 'notes.txt' is a file; choose a folder for --out", _text("notes.txt", "x")),
    Case("read-only-out", "an output folder inside a read-only folder", _train(out="ro/new"),
         "cannot write 'ro/new': the folder 'ro' is not writable (Permission denied); make it writable or choose "
         "another output folder", _mkdir("ro"), simulate="readonly:ro"),
    Case("read-only-run", "`ckptkd analyze` of a run in a read-only folder",
         ["analyze", "run", "--probe-size", "50", "--quiet"],
         "cannot write 'run/analysis-cache.json': the folder 'run' is not writable (Permission denied); make it "
         "writable or choose another output folder", simulate="readonly:run"),
    Case("full-disk", "a full disk", _train(out="new"),
         "no space left to write 'new/config.yaml' (No space left on device); free space on the disk that holds "
         "'new', or choose another output folder", simulate="full"),
    Case("disk-fills-midway", "the disk fills up when the first checkpoint is saved",
         _train("--epochs", "2", "--save-every", "1"),
         "no space left to write 'new/checkpoints/epoch_0001.safetensors' (No space left on device); free space on "
         "the disk that holds 'new/checkpoints', or choose another output folder",
         simulate="full:.safetensors", new_files=True),
    # ------------------------------------------------ trajectories
    Case("report-not-a-run", "`ckptkd report` of a folder that holds no run", ["report", "notes"],
         "'notes' is not a ckptkd run, ckptkd run output or study folder (it has no manifest.json, pipeline.json "
         "or results.json)", _text("notes/todo.txt", "x")),
    Case("report-unfinished-study", "`ckptkd report` of a study that has no results yet", ["report", "study"],
         "study 'study' has no readable results.json yet; run (or finish) it with ckptkd study CONFIG --out study",
         _text("study/study.yaml", "name: tiny\n")),
    Case("empty-trajectory", "`ckptkd analyze` of an empty folder", ["analyze", "empty", "--data", "digits"],
         "'empty' holds no ckptkd run and no checkpoint files (.pt, .pth, .ckpt, .bin)", _mkdir("empty")),
    Case("trajectory-is-a-file", "`ckptkd analyze` of a file", ["analyze", "good.pt", "--data", "digits"],
         "trajectory 'good.pt' is not a folder; give a run folder or a folder of checkpoints"),
    Case("foreign-trajectory-without-model", "`ckptkd analyze` of foreign checkpoints without `--model`",
         ["analyze", "foreign", "--data", "digits"],
         "'foreign' holds foreign checkpoints; say their architecture with --model", _foreign_folder),
    Case("trajectory-of-unnamed-model", "a trajectory kept (by `ckptkd.Trajectory`) for a model ckptkd cannot "
         "build, without `--model`", ["select", "run", "--policy", "last"],
         "run 'run' records no architecture ckptkd can build; say it with --model", _unnamed_model),
    # ------------------------------------------------ export
    Case("export-not-a-checkpoint", "`ckptkd export` of a file that is no checkpoint (a run's manifest)",
         ["export", "run/manifest.json", "--format", "onnx", "--out", "student.onnx"],
         "'run/manifest.json' is not a checkpoint of a ckptkd run (RUN/checkpoints/epoch_N.safetensors with its "
         "sidecar); export takes a student trained by ckptkd distill or ckptkd run"),
    Case("export-not-a-student", "`ckptkd export` of a checkpoint that no ckptkd run trained (a foreign `.pt`)",
         ["export", "good.pt", "--format", "onnx", "--out", "student.onnx"],
         "'good.pt' is not a checkpoint of a ckptkd run (RUN/checkpoints/epoch_N.safetensors with its sidecar); "
         "export takes a student trained by ckptkd distill or ckptkd run"),
    Case("export-missing-checkpoint", "`ckptkd export` of a checkpoint that does not exist",
         ["export", "nope.safetensors", "--format", "onnx", "--out", "student.onnx"],
         "checkpoint 'nope.safetensors' does not exist"),
    Case("export-unknown-format", "an unknown export format", ["export", CKPT, "--format", "onxx", "--out", "s.onnx"],
         "unknown export format 'onxx' (did you mean 'onnx'?); use one of onnx, pt2, torchscript"),
    Case("export-out-exists", "an export onto a file that exists, without `--overwrite`",
         ["export", CKPT, "--format", "torchscript", "--out", "notes.txt"],
         "'notes.txt' already exists; pass --overwrite to replace it, or choose another --out",
         _text("notes.txt", "x")),
    Case("export-out-is-a-folder", "an export onto a folder", ["export", CKPT, "--format", "onnx", "--out", "run"],
         "--out 'run' is a folder; give the file to write"),
    Case("export-out-folder-missing", "an export into a folder that does not exist",
         ["export", CKPT, "--format", "onnx", "--out", "nope/s.onnx"],
         "cannot write 'nope/s.onnx': the folder 'nope' does not exist"),
    Case("export-other-data", "an export checked on data of another input shape",
         ["export", CKPT, "--format", "torchscript", "--out", "s.pt", "--data", "npz:nine.npz"],
         "data 'npz:nine.npz' has inputs of shape (1, 9, 9) but the student takes (1, 8, 8); give the data it "
         "was trained with (--data)",
         _npz("nine.npz", x=np.zeros((30, 1, 9, 9), np.float32), x_test=np.zeros((9, 1, 9, 9), np.float32))),
    Case("export-read-only-folder", "an export into a read-only folder (found when the checked file is written)",
         ["export", CKPT, "--format", "pt2", "--out", "ro/s.pt2"],
         "cannot write 'ro/s.pt2': the folder 'ro' is not writable (Permission denied); make it writable or choose "
         "another output folder", _mkdir("ro"), simulate="readonly:ro"),
    Case("export-full-disk", "an export onto a full disk", ["export", CKPT, "--format", "pt2", "--out", "s.pt2"],
         "no space left to write 's.pt2' (No space left on device); free space on the disk that holds '.', or "
         "choose another output folder", simulate="full"),
    *[Case(f"export-data-dependent-{fmt}", f"a {fmt} export of a model whose forward branches on its input's values "
           "(`if x.sum() > 100`, tests/unexportable_models.py)",
           ["export", BRANCHY_CKPT, "--format", fmt, "--out", f"s.{fmt}"],
           f"model 'unexportable_models:value_branch' cannot be exported as {fmt}: its forward branches on its "
           "input's values (torch.export: data-dependent control flow); --format torchscript would work (legacy, "
           "but it keeps the branch)", _unexportable("unexportable_models:value_branch")) for fmt in ("pt2", "onnx")],
    Case("export-no-format-captures", "a pt2 export of a model whose forward branches on the batch size and that "
         "TorchScript cannot compile (tests/unexportable_models.py)",
         ["export", BRANCHY_CKPT, "--format", "pt2", "--out", "s.pt2"],
         "model 'unexportable_models:batch_branch_unscriptable' cannot be exported as pt2: its forward depends on "
         "the batch size, which the export keeps dynamic (torch.export: constraints violated); no format ckptkd "
         "writes captures it; write the branch with torch.cond, which torch.export keeps",
         _unexportable("unexportable_models:batch_branch_unscriptable")),
]


# ---------------------------------------------------------------- the doc table


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(cases=CASES) -> str:
    lines = ["| # | bad input | command | message (after `ckptkd: error: `) |", "|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c.id} | {_cell(c.input)} | `{c.command}` | {_cell(c.message)} |")
    return "\n".join(lines)


def parse_table(text: str) -> list[dict]:
    """The rows of the table between the markers in docs/errors.md."""
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append({"id": cells[0], "input": cells[1], "command": cells[2].strip("`"), "message": cells[3]})
    return rows


def write_doc() -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{START}\n{render_table()}\n{END}{tail}")


def matches(message: str, documented: str) -> bool:
    """``documented`` with each "…" standing for any text (a library's words)."""
    pattern = ".*?".join(re.escape(part) for part in documented.split("…"))
    return re.fullmatch(pattern, message) is not None


# ---------------------------------------------------------------- running a case


@pytest.fixture(scope="session")
def template(tmp_path_factory, trained_run):
    """The folder every case starts from: ``run/`` (a copy of the tiny trained run) and ``good.pt``."""
    import torch

    root = tmp_path_factory.mktemp("errors-template")
    shutil.copytree(trained_run.path, root / "run")
    torch.save(trained_run.checkpoints()[-1].state_dict(), root / "good.pt")
    return root


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _inside(path, folder: str) -> bool:
    try:
        p = os.path.abspath(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    return p == folder or p.startswith(folder + os.sep)


def _deny_writes(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only: chmod where that works, else (as root) refuse writes in-process."""
    os.chmod(folder, 0o555)  # the caller restores 0o755
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return  # the chmod holds: a real read-only folder
    probe.unlink()
    os.chmod(folder, 0o755)
    target = os.path.abspath(folder)

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def open_(file, mode="r", *a, **k):
        if _inside(file, target) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if _inside(path, target) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if _inside(path, target) and os.path.isdir(os.path.dirname(os.path.abspath(path))):
            refuse(path)  # (a missing parent still fails first, with ENOENT, as it does for real)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)


def _fill_disk(monkeypatch, only: str | None) -> None:
    """Every fsync (of a file whose path contains ``only``) fails with ENOSPC, as on a full disk."""
    real_fsync = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if only is None or only in name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _prepare(case: Case, template: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(template, work)
    if case.setup:
        case.setup(work)
    return work


def _check(case: Case, code, err: str, before: dict, after: dict) -> None:
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("ckptkd: error: "), lines[0]
    message = lines[0].removeprefix("ckptkd: error: ")
    assert matches(message, case.message), f"\n   got: {message}\ndocumented: {case.message}"
    if case.new_files:
        assert {k: v for k, v in after.items() if k in before} == before, "an existing file was changed or removed"
    else:
        assert after == before, "the command changed, added or removed files"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_answered_in_one_line(case, template, tmp_path, monkeypatch, capsys):
    if case.needs_no_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    from ckptkd.cli import main

    work = _prepare(case, template, tmp_path)
    before = _tree(work)
    monkeypatch.chdir(work)
    ro = None
    if case.simulate and case.simulate.startswith("readonly:"):
        ro = work / case.simulate.split(":", 1)[1]
        _deny_writes(monkeypatch, ro)
    elif case.simulate and case.simulate.startswith("full"):
        _fill_disk(monkeypatch, case.simulate.split(":", 1)[1] if ":" in case.simulate else None)
    capsys.readouterr()
    try:
        try:
            code = main(case.argv)
        except SystemExit as e:  # argparse's errors exit from inside main
            code = e.code
        err = capsys.readouterr().err
    finally:
        monkeypatch.undo()
        if ro is not None:
            os.chmod(ro, 0o755)
    _check(case, code, err, before, _tree(work))
    assert not (work / "MARKER").exists(), "a malicious pickle ran its code"


@pytest.mark.parametrize("case", [c for c in CASES if c.subprocess], ids=[c.id for c in CASES if c.subprocess])
def test_bad_input_in_a_real_process(case, template, tmp_path):
    work = _prepare(case, template, tmp_path)
    before = _tree(work)
    proc = subprocess.run([sys.executable, "-c", "import sys; from ckptkd.cli import main; sys.exit(main())",
                           *case.argv], cwd=work, capture_output=True, text=True)
    _check(case, proc.returncode, proc.stderr, before, _tree(work))
    assert proc.stdout == ""
    assert not (work / "MARKER").exists(), "a malicious pickle ran its code"


# ---------------------------------------------------------------- the doc and the cases agree


def test_there_are_at_least_thirty_cases_with_distinct_ids():
    ids = [c.id for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


def test_every_documented_row_has_a_case_and_every_case_a_row():
    rows = {r["id"]: r for r in parse_table(DOC.read_text())}
    cases = {c.id: c for c in CASES}
    assert sorted(rows) == sorted(cases), "docs/errors.md and CASES list different inputs; run " \
                                          "python tests/test_errors_table.py --write"
    for cid, c in cases.items():
        assert rows[cid] == {"id": cid, "input": c.input, "command": c.command, "message": c.message}, cid


def test_the_doc_table_is_the_generated_one():
    assert f"{START}\n{render_table()}\n{END}" in DOC.read_text(), "run python tests/test_errors_table.py --write"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_doc()
        print(f"wrote {len(CASES)} rows into {DOC}")
    else:
        print(render_table())
