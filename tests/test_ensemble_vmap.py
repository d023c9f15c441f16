"""The vmapped snapshot ensemble computes what the loop over members computes."""
import pytest
import torch

from ckptkd import CkptkdError, Teacher, create_model
from ckptkd.ensemble import StackedEnsemble, loop_logits, use_vmap


def _members(spec, k, in_shape, classes=10):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        m = create_model(spec, classes, in_shape).eval()
        for b in m.buffers():  # non-trivial BatchNorm statistics, different per member
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
        out.append(m)
    return out


@pytest.mark.parametrize("spec,in_shape,k", [
    ("cnn1d_m", (1, 40), 2), ("cnn1d_l", (1, 40), 4), ("mlp_m", (1, 8, 8), 8),
    ("resnet8", (3, 32, 32), 2), ("mobilenetv2_x0_25", (3, 32, 32), 2),
])
def test_vmap_ensemble_equals_the_loop(spec, in_shape, k):
    members = _members(spec, k, in_shape)
    x = torch.randn(16, *in_shape)
    stacked = StackedEnsemble(members)(x)
    looped = loop_logits(members, x)
    assert stacked.shape == looped.shape == (k, 16, 10)
    assert torch.allclose(stacked, looped, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_teacher_vmap_and_loop_give_the_same_targets(combine):
    members = _members("cnn1d_s", 3, (1, 40))
    x = torch.randn(32, 1, 40)
    vmapped = Teacher(members, combine, ensemble="vmap").log_probs(x, 4.0)
    looped = Teacher(members, combine, ensemble="loop").log_probs(x, 4.0)
    assert torch.allclose(vmapped, looped, rtol=1e-5, atol=1e-6)


def test_auto_uses_the_loop_on_cpu_and_vmap_on_cuda():
    members = _members("cnn1d_xs", 2, (1, 40))
    assert not use_vmap("auto", members, torch.device("cpu"))
    assert use_vmap("auto", members, torch.device("cuda"))
    assert not use_vmap("auto", members[:1], torch.device("cuda"))  # one member: nothing to batch
    assert use_vmap("vmap", members, torch.device("cpu"))


def test_members_of_different_architectures_fall_back_to_the_loop():
    mixed = _members("cnn1d_xs", 1, (1, 40)) + _members("cnn1d_s", 1, (1, 40))
    assert not use_vmap("auto", mixed, torch.device("cuda"))
    with pytest.raises(CkptkdError, match="one architecture"):
        use_vmap("vmap", mixed, torch.device("cpu"))
    with pytest.raises(CkptkdError, match="ensemble must be one of"):
        Teacher(mixed, ensemble="fast")


def test_moving_the_teacher_rebuilds_the_stacked_weights():
    teacher = Teacher(_members("cnn1d_xs", 2, (1, 40)), ensemble="vmap")
    x = torch.randn(4, 1, 40)
    before = teacher.log_probs(x)
    teacher.to(torch.float64)
    assert teacher._stacked is None
    assert teacher.log_probs(x.double()).dtype == torch.float32  # member logits are returned as float32
    assert torch.allclose(teacher.log_probs(x.double()), before, atol=1e-5)
