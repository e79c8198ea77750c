"""Gradient checkpointing for the CIFAR zoo (timm's ``set_grad_checkpointing``): same gradients, less memory
held between forward and backward."""

import pytest
import timm
import torch

from vitkd.models import CIFAR_MODELS
from vitkd.models.traits import model_traits

pytestmark = pytest.mark.usefixtures("one_thread")
ONE_PER_FAMILY = ["cifar_resnet8", "cifar_resnet18", "cifar_wrn_16_1", "cifar_vgg8", "cifar_mobilenetv2",
                  "cifar_shufflev1", "cifar_shufflev2"]


def test_every_zoo_model_offers_it():
    assert all(model_traits(name).grad_checkpointing for name in CIFAR_MODELS)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_checkpointed_gradients_equal_plain_ones(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).train()
    images = torch.randn(2, 3, 32, 32)

    def grads():
        model.zero_grad()
        model(images).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing(True)
    saved = []  # tensors kept for backward: checkpointing keeps only the stage inputs
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        model(images).sum()
    checkpointed = grads()
    assert model.grad_checkpointing
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model.set_grad_checkpointing(False)
    saved_plain = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_plain.append(t.numel()) or t, lambda t: t):
        model(images).sum()
    assert sum(saved) < sum(saved_plain)
