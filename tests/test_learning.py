"""Every registered method (and plain training) actually learns a learnable toy problem through the task."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkd.engine.task import DistillationTask
from vitkd.losses import available_losses, build_loss

CLASSES, DIM = 5, 10


def blobs(n, seed):
    """Gaussian blobs: class k centred at 3·e_k in R^DIM (linearly separable up to noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randn(n, DIM, generator=g)
    x[torch.arange(n), y] += 3.0
    return x, y


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, CLASSES))


@pytest.fixture(scope="module")
def teacher():
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = blobs(2048, 1)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.requires_grad_(False).eval()


@pytest.mark.parametrize("method", [*available_losses(), "none"])
def test_method_learns(method, teacher):
    criterion = None if method == "none" else build_loss(method)
    task = DistillationTask(mlp(1), teacher if criterion else None, criterion, ce_weight=1.0)
    opt = torch.optim.SGD(task.student.parameters(), lr=0.05, momentum=0.9)
    x, y = blobs(64 * 40, 2)
    losses = []
    for step in range(40):
        xb, yb = x[step * 64:(step + 1) * 64], y[step * 64:(step + 1) * 64]
        images = (xb + 0.1 * torch.randn_like(xb), xb + 0.5 * torch.randn_like(xb)) if task.num_views == 2 else xb
        out = task(images, yb)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    x_test, y_test = blobs(1000, 3)
    accuracy = (task.student(x_test).argmax(-1) == y_test).float().mean().item()
    assert accuracy > 0.8  # chance is 0.2
