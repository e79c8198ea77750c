"""The training task: loss composition, warm-up ramp, frozen teacher, two views, distilled heads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkd.engine.task import DistillationTask, TeacherEnsemble
from vitkd.losses import build_loss


def linear(seed, d=6, c=5):
    torch.manual_seed(seed)
    return nn.Linear(d, c)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randint(0, 5, (8,), generator=g)


def test_loss_is_weighted_ce_plus_ramped_kd(batch):
    images, targets = batch
    student, teacher = linear(0), linear(1).requires_grad_(False)
    kd = build_loss("kd", temperature=4.0)
    task = DistillationTask(student, teacher, kd, ce_weight=0.1, kd_weight=0.9, warmup_epochs=20)
    ce = F.cross_entropy(student(images), targets)
    kd_value = kd(student(images), teacher(images))
    task.set_epoch(1)  # 1-based: factor 1/20 in the first epoch
    out = task(images, targets)
    assert torch.allclose(out["loss"], 0.1 * ce + 0.9 * kd_value / 20)
    task.set_epoch(25)
    assert torch.allclose(task(images, targets)["loss"], 0.1 * ce + 0.9 * kd_value)
    assert torch.equal(out["output"], student(images).detach())


def test_teacher_gets_no_gradient_and_dkd_gets_targets(batch):
    images, targets = batch
    student, teacher = linear(0), linear(1)
    task = DistillationTask(student, teacher, build_loss("dkd"))
    task(images, targets)["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_plain_supervised_task(batch):
    images, targets = batch
    student = linear(0)
    out = DistillationTask(student)(images, targets)
    assert set(out) == {"loss", "output", "ce"}
    assert torch.allclose(out["loss"], F.cross_entropy(student(images), targets))
    with pytest.raises(ValueError, match="both a teacher and a criterion"):
        DistillationTask(student, teacher=linear(1))


def test_two_view_task_runs_both_views(batch):
    images, targets = batch
    strong = images.flip(0)
    student, teacher = linear(0), linear(1)
    crld = build_loss("crld")
    out = DistillationTask(student, teacher, crld, ce_weight=1.0)((images, strong), targets)
    want_ce = F.cross_entropy(student(images), targets) + F.cross_entropy(student(strong), targets)
    want_kd = crld(student(images), student(strong), teacher(images), teacher(strong))
    assert torch.allclose(out["ce"], want_ce) and torch.allclose(out["kd"], want_kd)
    assert torch.allclose(out["loss"], want_ce + want_kd)


class TwoHeads(nn.Module):
    """Stand-in for a DeiT-distilled student in distilled-training mode: returns (cls, dist)."""

    def __init__(self):
        super().__init__()
        self.cls, self.dist = linear(0), linear(2)

    def forward(self, x):
        return self.cls(x), self.dist(x)


@pytest.mark.parametrize("heads", ["cls", "split"])
def test_distilled_student_heads(batch, heads):
    images, targets = batch
    student, teacher = TwoHeads(), linear(1)
    kd = build_loss("kd")
    out = DistillationTask(student, teacher, kd, heads=heads)(images, targets)
    kd_head = student.dist if heads == "split" else student.cls
    assert torch.allclose(out["ce"], F.cross_entropy(student.cls(images), targets))
    assert torch.allclose(out["kd"], kd(kd_head(images), teacher(images)))


def test_ensemble_averages_teacher_logits(batch):
    images, _ = batch
    a, b = linear(1), linear(2)
    assert torch.allclose(TeacherEnsemble([a, b])(images), (a(images) + b(images)) / 2)
