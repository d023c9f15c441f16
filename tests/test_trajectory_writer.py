"""ckptkd.Trajectory: a run folder kept by the user's own loop, read by every command unchanged."""
import json

import pytest
import torch

import ckptkd
from ckptkd import CkptkdError, Run, Trajectory, create_model
from ckptkd.cli import main
from conftest import tree_digest


def _keep(digits, folder, spec="mlp_xs", epochs=3, **create):
    torch.manual_seed(0)
    model = create_model("mlp_xs", digits.num_classes, digits.in_shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    traj = Trajectory.create(folder, spec, digits.num_classes, digits.in_shape, **create)
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in zip(digits.x_train.split(64), digits.y_train.split(64)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(digits.x_test)
        traj.save(model, epoch, metrics={"val_acc": (logits.argmax(1) == digits.y_test).float().mean(),
                                         "val_loss": torch.nn.functional.cross_entropy(logits, digits.y_test)})
    traj.close()
    return model, traj


def test_a_plain_loop_leaves_a_run_that_analyze_select_distill_and_report_read(digits, tmp_path, capsys):
    model, traj = _keep(digits, tmp_path / "mine", data="digits", data_fingerprint=digits.fingerprint,
                        description="my loop")
    run = Run(tmp_path / "mine")
    assert run.complete and run.model == "mlp_xs" and run.manifest["data_fingerprint"] == digits.fingerprint
    assert run.config["data"]["spec"] == "digits" and run.config["description"] == "my loop"
    ckpts = run.checkpoints()
    assert [c.epoch for c in ckpts] == [1, 2, 3]
    assert set(ckpts[0].meta) >= {"val_acc", "val_loss", "sha256", "epoch"}
    assert 0 < ckpts[-1].meta["val_acc"] <= 1 and isinstance(ckpts[-1].meta["val_acc"], float)
    assert all(torch.equal(ckpts[-1].state_dict()[k], v) for k, v in model.state_dict().items())
    assert [m["val_acc"] for m in run.metrics()] == [c.meta["val_acc"] for c in ckpts]

    capsys.readouterr()
    assert main(["analyze", str(run.path), "--probe-size", "200", "--quiet"]) == 0  # no --data: the folder says
    assert "<- best" in capsys.readouterr().out
    assert main(["select", str(run.path), "--json", "--quiet"]) == 0
    chosen = json.loads(capsys.readouterr().out)["chosen"][0]["path"]
    assert main(["distill", "--teacher", chosen, "--data", "digits", "--model", "mlp_xs", "--epochs", "1",
                 "--out", str(tmp_path / "student"), "--quiet"]) == 0
    assert main(["report", str(run.path)]) == 0
    assert (run.path / "report.html").stat().st_size > 0


def test_a_wrapped_state_dict_is_saved_under_the_architecture_s_keys(digits, tmp_path):
    net = create_model("mlp_xs", digits.num_classes, digits.in_shape)
    wrapper = torch.nn.Module()
    wrapper.model = net  # a LightningModule-style wrapper: keys start with "model."
    traj = Trajectory.create(tmp_path / "t", "mlp_xs", digits.num_classes, digits.in_shape)
    ckpt = traj.save(wrapper, 5)
    assert set(ckpt.state_dict()) == set(net.state_dict())
    loaded = ckptkd.load_model(ckptkd.open_checkpoint(ckpt.path), digits.num_classes, digits.in_shape)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())


def test_the_wrong_model_is_refused_and_nothing_is_written(digits, tmp_path):
    traj = Trajectory.create(tmp_path / "t", "mlp_xs", digits.num_classes, digits.in_shape)
    before = tree_digest(tmp_path / "t")
    with pytest.raises(CkptkdError, match="does not fit 'mlp_xs'"):
        traj.save(create_model("mlp_s", digits.num_classes, digits.in_shape), 1)
    with pytest.raises(CkptkdError, match="is not 'mlp_xs'"):
        traj.save(create_model("cnn1d_xs", digits.num_classes, (1, 64)), 1)
    with pytest.raises(CkptkdError, match="metric 'val_acc' must be a number"):
        traj.save(create_model("mlp_xs", digits.num_classes, digits.in_shape), 1, metrics={"val_acc": "high"})
    with pytest.raises(CkptkdError, match="only finite numbers"):
        traj.save(create_model("mlp_xs", digits.num_classes, digits.in_shape), 1, metrics={"val_loss": float("nan")})
    with pytest.raises(CkptkdError, match="non-negative integer"):
        traj.save(create_model("mlp_xs", digits.num_classes, digits.in_shape), 1.5)
    assert tree_digest(tmp_path / "t") == before


def test_a_bad_spec_fails_before_the_folder_exists(digits, tmp_path):
    with pytest.raises(CkptkdError, match="unknown model 'mlp_xss'"):
        Trajectory.create(tmp_path / "t", "mlp_xss", digits.num_classes, digits.in_shape)
    with pytest.raises(CkptkdError, match="cannot import model"):
        Trajectory.create(tmp_path / "t", "no_such_module:net", digits.num_classes, digits.in_shape)
    with pytest.raises(CkptkdError, match="data must be a dataset spec string or a ckptkd.DataConfig"):
        Trajectory.create(tmp_path / "t", "mlp_xs", digits.num_classes, digits.in_shape, data=digits)
    assert not (tmp_path / "t").exists()


def test_a_user_model_named_by_module_function(digits, tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch\n"
        "from ckptkd import create_model\n"
        "def small(num_classes, in_shape):\n"
        "    return create_model('mlp_xs', num_classes, in_shape)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _keep(digits, tmp_path / "t", spec="mynets:small", epochs=1)
    ckpt = ckptkd.open_trajectory(tmp_path / "t")[0]
    assert ckpt.model == "mynets:small"
    ckptkd.load_model(ckpt, digits.num_classes, digits.in_shape)


def test_a_foreign_model_needs_model_later(digits, tmp_path, capsys):
    _keep(digits, tmp_path / "t", spec=None, epochs=2)
    assert Run(tmp_path / "t").model is None
    with pytest.raises(CkptkdError, match="records no architecture ckptkd can build; say it with --model"):
        ckptkd.open_trajectory(tmp_path / "t")
    assert [c.model for c in ckptkd.open_trajectory(tmp_path / "t", "mlp_xs")] == ["mlp_xs", "mlp_xs"]
    with pytest.raises(CkptkdError, match="records no architecture ckptkd can build; say its architecture"):
        ckptkd.open_checkpoint(tmp_path / "t" / "checkpoints" / "epoch_0002.safetensors")
    capsys.readouterr()
    assert main(["select", str(tmp_path / "t"), "--policy", "last", "--model", "mlp_xs"]) == 0
    assert "epoch 2" in capsys.readouterr().out


def test_resume_reopens_and_an_existing_folder_is_never_replaced_silently(digits, tmp_path):
    _keep(digits, tmp_path / "t", epochs=2)
    with pytest.raises(CkptkdError, match="already holds a run"):
        Trajectory.create(tmp_path / "t", "mlp_xs", digits.num_classes, digits.in_shape)
    traj = Trajectory.create(tmp_path / "t", "mlp_xs", digits.num_classes, digits.in_shape, resume=True)
    traj.save(create_model("mlp_xs", digits.num_classes, digits.in_shape), 3)
    assert [c.epoch for c in traj.checkpoints()] == [1, 2, 3]
    with pytest.raises(CkptkdError, match="different config"):
        Trajectory.create(tmp_path / "t", "mlp_s", digits.num_classes, digits.in_shape, resume=True)
