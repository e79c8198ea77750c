"""The CIFAR zoo: parity with the released checkpoints' state dicts, release-format round trips, timm API."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from vitkd.models import CIFAR_MODELS, load_weights
from vitkd.models.cifar_base import CIFAR100_MEAN, CIFAR100_STD

# Parameter count and state-dict key -> shape of every model in the public CRD/DKD checkpoint releases
# (`<name>_vanilla/ckpt_epoch_240.pth`, 100 classes), keyed by release name: see tests/data/README.md.
REFERENCE = Path(__file__).parent / "data" / "cifar_zoo_state_dicts.json"

ONE_PER_FAMILY = (
    "cifar_resnet8",
    "cifar_resnet18",
    "cifar_wrn_16_2",
    "cifar_vgg8",
    "cifar_mobilenetv2",
    "cifar_shufflev1",
    "cifar_shufflev2",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _reference() -> dict[str, dict]:
    """Reference entries keyed by vitkd model name (``cifar_`` + lower-case release name)."""
    return {f"cifar_{name.lower()}": entry for name, entry in json.loads(REFERENCE.read_text()).items()}


@functools.cache
def _model(name: str) -> nn.Module:
    """A 100-class model shared by the read-only tests."""
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=100)


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-default running statistics, so that a round trip also has to carry the buffers."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)


def test_reference_lists_exactly_the_zoo():
    assert set(_reference()) == set(CIFAR_MODELS)
    assert len(CIFAR_MODELS) == 23


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_state_dict_matches_release(name):
    reference = _reference()[name]
    model = _model(name)
    assert sum(p.numel() for p in model.parameters()) == reference["params"]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == reference["state_dict"]


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_release_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(name, num_classes=100).eval()
    _randomise_batchnorm(source)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": source.state_dict(), "epoch": 240, "best_acc": 0.75}, path)
    torch.manual_seed(1)
    target = timm.create_model(name, num_classes=100).eval()
    first_conv = f"{target.pretrained_cfg['first_conv']}.weight"
    assert not torch.equal(target.state_dict()[first_conv], source.state_dict()[first_conv])

    report = load_weights(target, path)
    assert report.complete and set(report.loaded) == set(source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_list_models_has_the_zoo():
    assert set(timm.list_models("cifar_*")) == set(CIFAR_MODELS)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pretrained_cfg(name):
    model = _model(name)
    cfg = model.pretrained_cfg
    assert (cfg["mean"], cfg["std"], cfg["input_size"]) == (CIFAR100_MEAN, CIFAR100_STD, (3, 32, 32))
    state = model.state_dict()
    assert state[f"{cfg['classifier']}.weight"].shape == (100, model.num_features)
    assert state[f"{cfg['first_conv']}.weight"].shape[1] == 3
    assert model.get_classifier()(torch.zeros(1, model.num_features)).shape == (1, 100)
    assert model.num_classes == 100 and model.in_chans == 3


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_timm_model_api(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
        logits = model(x)
        assert logits.shape == (2, 10)
        assert torch.equal(logits, model.forward_head(features))

        model.reset_classifier(5)
        assert model.num_classes == 5 and model.get_classifier()(pooled).shape == (2, 5)
        assert model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert torch.equal(model(x), pooled)


def test_vgg_pools_after_block3_only_at_64px():
    model = _model("cifar_vgg8").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-2:] == (4, 4)
