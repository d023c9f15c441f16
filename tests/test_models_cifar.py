"""The CIFAR model zoo (resnet, wrn, mobilenetv2, shufflenetv2): shapes, feature API, sizes."""
import pytest
import torch

from ckptkd.models import create_model

CIFAR_MODELS = [
    *(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)),
    "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "mobilenetv2", "mobilenetv2_x0_5", "mobilenetv2_x0_25",
    "shufflenetv2", "shufflenetv2_x0_5",
]

# parameter counts (millions, as published to 2 decimals) of the CRD zoo with 100 classes (Tian et al. 2020)
CRD_PARAMS_M = {
    "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86, "resnet110": 1.73,
    "resnet8x4": 1.23, "resnet32x4": 7.43,
    "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26,
    "mobilenetv2_x0_5": 0.81, "shufflenetv2": 1.36,
}


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_forward_and_feature_api(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_shape=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        f = model.forward_head(feats, pre_logits=True)
        head = model.forward_head(feats)
    assert logits.shape == (2, 7)
    assert feats.dim() == 4 and feats.shape[1] == model.num_features
    assert f.shape == (2, model.num_features)
    assert model.fc.in_features == model.num_features
    assert (feats >= 0).all(), "features come after the final ReLU"
    torch.testing.assert_close(logits, head)


@pytest.mark.parametrize("name, millions", sorted(CRD_PARAMS_M.items()))
def test_param_counts_match_crd_zoo(name, millions):
    model = create_model(name, num_classes=100, in_shape=(3, 32, 32))
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(millions * 1e6, rel=0.03), f"{name}: {n / 1e6:.3f}M"


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2"])
def test_one_channel_small_images(name):
    model = create_model(name, num_classes=3, in_shape=(1, 16, 16)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


def test_train_step_backprops():
    model = create_model("resnet8", num_classes=4, in_shape=(3, 32, 32)).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
