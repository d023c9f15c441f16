"""A real Lightning Trainer keeps its trajectory with KeepTrajectory; ckptkd select and distill read it."""
import json

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from ckptkd import Run, create_model  # noqa: E402
from ckptkd.cli import main  # noqa: E402
from ckptkd.integrations.lightning import KeepTrajectory, logged_numbers  # noqa: E402


class Classifier(pl.LightningModule):
    """The user's module: a ckptkd architecture under ``self.net``, logging val_acc / val_loss."""

    def __init__(self, num_classes, in_shape):
        super().__init__()
        self.net = create_model("mlp_xs", num_classes, in_shape)
        self.val_acc = {}  # epoch (from 1) -> the val_acc logged in it

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.val_acc[self.current_epoch + 1] = float(self.trainer.callback_metrics["val_acc"])

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _fit(digits, callback, epochs=3):
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    module = Classifier(digits.num_classes, digits.in_shape)
    train = DataLoader(TensorDataset(digits.x_train, digits.y_train), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=256)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, train, val)
    return module, trainer


def test_trainer_keeps_a_trajectory_that_select_and_distill_read(digits, tmp_path, capsys):
    keep = KeepTrajectory(tmp_path / "teacher", model_spec="mlp_xs", num_classes=digits.num_classes,
                          in_shape=digits.in_shape, every_n_epochs=2, data="digits")
    module, trainer = _fit(digits, keep)
    run = Run(tmp_path / "teacher")
    assert run.complete and run.model == "mlp_xs"
    ckpts = run.checkpoints()
    assert [c.epoch for c in ckpts] == [2, 3]  # every 2nd epoch, and the last
    assert [c.meta["val_acc"] for c in ckpts] == [module.val_acc[2], module.val_acc[3]]  # each its own epoch's
    assert module.val_acc[2] != module.val_acc[3] and all(c.meta["val_loss"] > 0 for c in ckpts)
    last = ckpts[-1]
    # the kept weights are the module's net, under the architecture's own key names
    assert all(torch.equal(last.state_dict()[k], v) for k, v in module.net.state_dict().items())
    assert [m["epoch"] for m in run.metrics()] == [2, 3]

    capsys.readouterr()
    assert main(["select", str(run.path), "--json", "--quiet"]) == 0  # data from the run
    chosen = json.loads(capsys.readouterr().out)["chosen"][0]["path"]
    assert chosen in {str(c.path) for c in ckpts}
    assert main(["distill", "--teacher", chosen, "--data", "digits", "--model", "mlp_xs", "--epochs", "1",
                 "--out", str(tmp_path / "student"), "--quiet"]) == 0
    assert Run(tmp_path / "student").complete


def test_a_foreign_module_is_kept_whole_and_needs_model_later(digits, tmp_path, capsys):
    keep = KeepTrajectory(tmp_path / "teacher", model_spec=None, num_classes=digits.num_classes,
                          in_shape=digits.in_shape, every_n_epochs=3)
    _fit(digits, keep)
    ckpts = Run(tmp_path / "teacher").checkpoints()
    assert [c.epoch for c in ckpts] == [3] and all(k.startswith("net.") for k in ckpts[0].state_dict())
    capsys.readouterr()
    assert main(["select", str(tmp_path / "teacher"), "--policy", "last"]) == 2
    assert "say it with --model" in capsys.readouterr().err
    assert main(["select", str(tmp_path / "teacher"), "--policy", "last", "--model", "mlp_xs"]) == 0
    assert "epoch 3" in capsys.readouterr().out


def test_logged_numbers_keeps_finite_scalars_only():
    got = logged_numbers({"val_acc": torch.tensor(0.5), "loss": torch.tensor(float("nan")), "vec": torch.ones(3),
                          "epoch": torch.tensor(2.0), "lr": 0.1})
    assert got == {"val_acc": 0.5, "lr": 0.1}
