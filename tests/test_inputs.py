"""What a checkpoint was trained on, checked against the data it meets; the augmentation a run used.

The one-line refusals themselves are cases in test_errors_table.py; here: what checkpoints
record, the warning for other data of the same shape, and how ``data.augment`` resolves.
"""
import json

import numpy as np
import pytest
import torch
import yaml

from ckptkd import CkptkdError, DataConfig, load_dataset
from ckptkd import errors
from ckptkd.cli import main
from ckptkd.config import StudyConfig, from_dict
from ckptkd.data.cifar import write_fake_cifar
from ckptkd.trajectory import Run, open_checkpoint, open_trajectory


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each CLI call here warns as a fresh process would."""
    monkeypatch.setattr(errors, "_WARNED", set())


def _save_npz(path, x, y, xt, yt):
    np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y), x_test=np.asarray(xt, np.float32), y_test=np.asarray(yt))
    return path


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory, ckptkd_cache):
    """mlp_xs trained on digits flattened to (1, 64): its weights fit digits' (1, 8, 8) too."""
    root = tmp_path_factory.mktemp("flat")
    d = load_dataset("digits")
    _save_npz(root / "flat.npz", d.x_train.flatten(2), d.y_train, d.x_test.flatten(2), d.y_test)
    assert main(["train", "--data", f"npz:{root / 'flat.npz'}", "--model", "mlp_xs", "--epochs", "1",
                 "--batch-size", "64", "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


# ---------------------------------------------------------------- what a checkpoint records


def test_checkpoints_record_the_input_shape_and_the_data(trained_run, digits):
    for c in trained_run.checkpoints():
        sidecar = json.loads(c.path.with_suffix(".json").read_text())
        assert tuple(sidecar["in_shape"]) == digits.in_shape and sidecar["data_fingerprint"] == digits.fingerprint
        assert c.in_shape == digits.in_shape and c.data_fingerprint == digits.fingerprint
        opened = open_checkpoint(c.path)
        assert opened.in_shape == digits.in_shape and opened.data_fingerprint == digits.fingerprint


def test_sidecars_written_before_the_record_fall_back_on_the_manifest(run_copy, digits):
    for sidecar in (run_copy.path / "checkpoints").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        del meta["in_shape"], meta["data_fingerprint"]
        sidecar.write_text(json.dumps(meta))
    for c in Run(run_copy.path).checkpoints() + [open_checkpoint(run_copy.checkpoints()[0].path)]:
        assert c.in_shape == digits.in_shape and c.data_fingerprint == digits.fingerprint


def test_foreign_checkpoints_record_them_as_unknown(trained_run, tmp_path):
    (tmp_path / "foreign").mkdir()
    torch.save(trained_run.checkpoints()[-1].state_dict(), tmp_path / "foreign" / "epoch_3.pt")
    for c in [open_checkpoint(tmp_path / "foreign" / "epoch_3.pt", "mlp_xs"),
              *open_trajectory(tmp_path / "foreign", "mlp_xs")]:
        assert c.in_shape is None and c.data_fingerprint is None


# ---------------------------------------------------------------- refused, or warned about


@pytest.mark.parametrize("command", ["eval", "distill", "analyze", "select"])
def test_a_teacher_of_another_input_shape_is_refused(command, flat_run, tmp_path, capsys, digest):
    ckpt = flat_run / "checkpoints" / "epoch_0001.safetensors"
    argv = {"eval": ["eval", ckpt],
            "distill": ["distill", "--teacher", ckpt, "--model", "mlp_xs", "--out", tmp_path / "student"],
            "analyze": ["analyze", flat_run], "select": ["select", flat_run, "--policy", "val-nll-1se"]}[command]
    before = digest(flat_run)
    quiet = [] if command == "eval" else ["--quiet"]  # eval shows no progress bar: it takes no --quiet
    code, out, err = cli(capsys, *argv, "--data", "digits", *quiet)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "(1, 64)" in err and "(1, 8, 8)" in err
    assert digest(flat_run) == before and not (tmp_path / "student").exists()


def test_other_data_of_the_same_shape_is_warned_about_once(trained_run, digits, tmp_path, capsys):
    # digits without their last 100 training samples: the same kind of data, another fingerprint
    data = _save_npz(tmp_path / "fewer.npz", digits.x_train[:-100], digits.y_train[:-100], digits.x_test, digits.y_test)
    ckpts = [c.path for c in trained_run.checkpoints()]
    code, out, err = cli(capsys, "eval", *ckpts, "--ensemble", "--data", f"npz:{data}")
    assert code == 0 and len(out.splitlines()) == 4
    assert err.count("\n") == 1 and err.startswith("ckptkd: warning: ") and "other data of the same shape" in err
    code, _, err = cli(capsys, "eval", ckpts[-1], "--data", "digits")  # its own data: no warning
    assert code == 0 and err == ""


def test_an_analysis_warns_even_when_served_from_its_cache(run_copy, digits, tmp_path, capsys):
    data = _save_npz(tmp_path / "fewer.npz", digits.x_train[:-100], digits.y_train[:-100], digits.x_test, digits.y_test)
    for _ in range(2):
        errors._WARNED.clear()
        code, _, err = cli(capsys, "analyze", run_copy.path, "--data", f"npz:{data}", "--probe-size", "50", "--quiet")
        assert code == 0 and err.count("ckptkd: warning: ") == 1, err


def test_the_model_a_ckptkd_checkpoint_names_may_be_repeated(trained_run, capsys):
    code, _, err = cli(capsys, "eval", trained_run.checkpoints()[-1].path, "--model", "mlp_xs", "--data", "digits")
    assert code == 0 and err == ""


def test_a_dataset_function_that_gives_the_wrong_number_of_outputs_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_three_logits.py").write_text(
        "from torch import nn\n"
        "def make(num_classes, in_shape):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # ignores num_classes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "my_three_logits:make", "--out",
                       tmp_path / "new", "--quiet")
    assert code == 2 and "gives outputs of shape (3,) per sample but the data has 10 classes" in err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- augmentation


def test_yaml_true_and_false_still_mean_default_and_none():
    assert from_dict(DataConfig, {"augment": True}).augment == "default"
    assert from_dict(DataConfig, {"augment": False}).augment == "none"
    assert from_dict(DataConfig, {"augment": "shift+flip"}).augment == "shift+flip"
    with pytest.raises(CkptkdError, match="data.augment must be one of"):
        from_dict(DataConfig, {"augment": "flip"})


def _images_npz(tmp_path, shape=(1, 8, 8)):
    rng = np.random.default_rng(0)
    return _save_npz(tmp_path / "imgs.npz", rng.random((20, *shape)), np.arange(20) % 2,
                     rng.random((6, *shape)), np.arange(6) % 2)


def _image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "folder" / cls / f"{i}.png")
    return tmp_path / "folder"


def test_flips_are_the_default_for_cifar_alone(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path / "cifar", 10, n_train=20, n_test=10, seed=0)
    (tmp_path / "my_grid_data.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    r = np.random.default_rng(0)\n"
        "    return r.random((20, 1, 8, 8)), np.arange(20) % 2, r.random((6, 1, 8, 8)), np.arange(6) % 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    got = {spec: load_dataset(spec) for spec in
           ["mnist1d", "digits", f"cifar10:{tmp_path / 'cifar'}", f"npz:{_images_npz(tmp_path)}",
            f"imagefolder:{_image_folder(tmp_path)}", "my_grid_data:make"]}
    lines = {spec.split(":")[0]: d.augment_line for spec, d in got.items()}
    assert lines == {
        "mnist1d": "augmentation: shift+noise (default for mnist1d)",  # unchanged: shift 4, noise 0.05
        "digits": "augmentation: shift (default for digits)",  # unchanged: glyphs never flipped
        "cifar10": "augmentation: shift+flip (default for cifar10)",
        "npz": "augmentation: shift (default for npz)",  # flipped before
        "imagefolder": "augmentation: shift (default for imagefolder)",  # flipped before
        "my_grid_data": "augmentation: shift (default for a dataset function)",  # flipped before
    }
    assert got["mnist1d"].augment.shift == 4 and got["mnist1d"].augment.noise == 0.05
    assert got["digits"].augment.shift == 1
    assert got[f"cifar10:{tmp_path / 'cifar'}"].augment.shift == 4


@pytest.mark.parametrize("choice, shift, flip", [("none", 0, False), ("shift", 1, False), ("shift+flip", 1, True)])
def test_an_asked_augmentation_is_the_one_used(choice, shift, flip, tmp_path):
    data = load_dataset(DataConfig(spec=f"npz:{_images_npz(tmp_path)}", augment=choice))
    assert (data.augment.shift, data.augment.flip, data.augment.noise) == (shift, flip, 0.0)
    assert data.augment_line == f"augmentation: {choice} (asked for)"


def test_views_of_a_chosen_augmentation_are_a_function_of_seed_epoch_and_index(tmp_path):
    data = load_dataset(DataConfig(spec=f"npz:{_images_npz(tmp_path)}", augment="shift+flip"))
    n, idx = len(data.x_train), torch.tensor([4, 11])
    views = [data.augment.params(n, data.in_shape, data.view_seed, epoch=3) for _ in range(2)]
    whole = data.augment.apply(data.x_train, views[0])[idx]
    alone = data.augment.apply(data.x_train[idx], {k: v[idx] for k, v in views[1].items()})
    assert torch.equal(whole, alone)


def test_training_prints_and_records_the_augmentation_it_used(tmp_path, capsys):
    data = _images_npz(tmp_path)
    for flags, line in [((), "augmentation: shift (default for npz)"),
                        (("--augment", "shift+flip"), "augmentation: shift+flip (asked for)")]:
        out_dir = tmp_path / f"run{len(flags)}"
        code, out, _ = cli(capsys, "train", "--data", f"npz:{data}", "--model", "mlp_xs", "--epochs", "1",
                           "--batch-size", "8", *flags, "--out", out_dir, "--quiet")
        assert code == 0 and out.splitlines()[0] == line
        manifest = json.loads((out_dir / "manifest.json").read_text())
        name, why = line.removeprefix("augmentation: ").split(" ", 1)
        assert (manifest["augment"], manifest["augment_why"]) == (name, why.strip("()"))
        assert yaml.safe_load((out_dir / "config.yaml").read_text())["data"]["augment"] == (flags[1] if flags else "default")


@pytest.mark.parametrize("command", ["train", "distill", "run", "study"])
def test_every_training_command_takes_augment(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--augment {none,shift,shift+flip,default}" in capsys.readouterr().out


def test_a_study_augment_flag_overrides_its_yaml(tmp_path):
    from ckptkd.cli import _overrides, build_parser
    from ckptkd.config import load_config

    (tmp_path / "s.yaml").write_text("name: s\ndata: {spec: digits, augment: shift}\n")
    args = build_parser().parse_args(["study", str(tmp_path / "s.yaml"), "--augment", "none"])
    assert load_config(StudyConfig, args.config_file, _overrides(args)).data.augment == "none"


def test_study_cells_are_keyed_by_the_augmentation_the_data_resolves_to(tmp_path):
    from ckptkd.study.cells import Cell, cell_key

    teacher = Cell("teacher/seed0", "teacher", 0, "teacher")
    key = lambda augment: cell_key(teacher, StudyConfig(data=DataConfig(spec="digits", augment=augment)))  # noqa: E731
    assert key(True) == key("default") == key("shift")  # digits: the default is a one-pixel shift
    assert key("none") == key(False) != key("default")


def test_labels_that_skip_a_class_are_warned_about(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = _save_npz(tmp_path / "one_based.npz", rng.random((20, 1, 16)), np.arange(20) % 3 + 1,
                     rng.random((6, 1, 16)), np.arange(6) % 3 + 1)
    data = load_dataset(f"npz:{path}")
    err = capsys.readouterr().err
    assert data.num_classes == 4
    assert err.count("\n") == 1 and err.startswith("ckptkd: warning: ") and "no training sample has label 0," in err
    load_dataset(f"npz:{_images_npz(tmp_path)}")  # every class present: nothing to say
    assert capsys.readouterr().err == ""
