"""Models whose forward branches on its input, for the export tests (``module.path:function``
specs; tests/ is on the path under pytest). Each wraps mlp_xs, so a checkpoint of one holds
mlp_xs's weights under ``net.``."""
import torch

from ckptkd import create_model


class _Wrapped(torch.nn.Module):
    def __init__(self, num_classes, in_shape):
        super().__init__()
        self.net = create_model("mlp_xs", num_classes, in_shape)


class ValueBranch(_Wrapped):
    """Doubles its logits when the batch's pixels sum above 100: data-dependent control flow,
    which torch.export refuses and torch.jit.script keeps. (Digits' pixels are >= 0, and of the
    export check's batches the first two test images sum to 37, the first seven after them to
    134: a trace of the two would be wrong on the seven.)"""

    def forward(self, x):
        logits = self.net(x)
        if x.sum() > 100:
            return 2 * logits
        return logits


class BatchBranchUnscriptable(_Wrapped):
    """Doubles its logits for batches of more than 8; its ``*rest`` argument is Python that
    torch.jit.script rejects, so TorchScript falls back to tracing, which records one branch."""

    def forward(self, x, *rest):
        logits = self.net(x)
        return 2 * logits if x.shape[0] > 8 else logits


def value_branch(num_classes, in_shape):
    return ValueBranch(num_classes, in_shape)


def batch_branch_unscriptable(num_classes, in_shape):
    return BatchBranchUnscriptable(num_classes, in_shape)


def checkpoint_of(folder, spec: str):
    """A one-checkpoint run of ``spec`` in ``folder`` (data: digits); returns the checkpoint."""
    import ckptkd

    traj = ckptkd.Trajectory.create(folder, spec, 10, (1, 8, 8), data="digits")
    return traj.save(ckptkd.create_model(spec, 10, (1, 8, 8)), 1)
