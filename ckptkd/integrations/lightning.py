"""A PyTorch Lightning callback that keeps the teacher's trajectory as a ckptkd run folder.

    from ckptkd.integrations.lightning import KeepTrajectory

    keep = KeepTrajectory("runs/teacher", model_spec="mlp_m", num_classes=10, in_shape=(1, 8, 8), every_n_epochs=2)
    lightning.Trainer(max_epochs=30, callbacks=[keep]).fit(module, train_loader, val_loader)

After each kept epoch the module's weights are written with the metrics Lightning has
logged by then (``trainer.callback_metrics``: ``val_acc``, ``val_loss``, ...), so
``ckptkd analyze`` / ``select`` / ``distill`` work on the folder. Needs the ``lightning``
extra (``lightning`` or ``pytorch-lightning``).
"""
from __future__ import annotations

import math
from pathlib import Path

try:  # the unified package first; the standalone pytorch_lightning has its own Callback class
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("ckptkd.integrations.lightning needs PyTorch Lightning: "
                          "pip install 'ckptkd[lightning]'") from None

from ..trajectory.writer import RESERVED, Trajectory


class KeepTrajectory(Callback):
    """Save the LightningModule (or its submodule ``attr``, e.g. ``"net"``) every
    ``every_n_epochs`` epochs and after the last one, into ``folder``.

    ``model_spec``, ``num_classes`` and ``in_shape`` describe the network as
    ``ckptkd.Trajectory.create`` takes them; ``model_spec=None`` records it as foreign (then
    ``--model`` is needed later). Epochs are counted from 1, as ``ckptkd train`` counts them.
    Only global rank 0 writes.
    """

    def __init__(self, folder: str | Path, *, model_spec: str | None, num_classes: int, in_shape,
                 every_n_epochs: int = 1, attr: str | None = None, data=None, data_fingerprint: str | None = None,
                 description: str | None = None, overwrite: bool = False, resume: bool = False):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.folder, self.every_n_epochs, self.attr = Path(folder), int(every_n_epochs), attr
        self._create = dict(model_spec=model_spec, num_classes=num_classes, in_shape=in_shape, data=data,
                            data_fingerprint=data_fingerprint, description=description, overwrite=overwrite,
                            resume=resume)
        self.trajectory: Trajectory | None = None
        self._done = 0  # epochs finished
        self._saved = None  # the last epoch saved

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and self.trajectory is None:
            self.trajectory = Trajectory.create(self.folder, **self._create)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # in Lightning 2.x this runs after the epoch's validation, so its val metrics are logged
        self._done = trainer.current_epoch + 1
        if self._done % self.every_n_epochs == 0:
            self._save(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._done and self._saved != self._done:  # the last epoch is always kept, as ckptkd train does
            self._save(trainer, pl_module)
        if self.trajectory is not None:
            self.trajectory.close()

    def _save(self, trainer, pl_module) -> None:
        if self.trajectory is None or trainer.sanity_checking:
            return
        model = getattr(pl_module, self.attr) if self.attr else pl_module
        self.trajectory.save(model, self._done, metrics=logged_numbers(trainer.callback_metrics))
        self._saved = self._done


def logged_numbers(metrics: dict) -> dict[str, float]:
    """The finite scalar metrics of ``trainer.callback_metrics``; a NaN loss is not a reason to stop training."""
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):  # a tensor of several values, a string
            continue
        if math.isfinite(number) and key not in RESERVED:
            out[str(key)] = number
    return out
