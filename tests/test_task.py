"""The training task: loss composition, warm-up ramp, frozen teacher, two views, distilled heads."""

import copy

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


def test_split_heads_train_both_heads_and_report_their_mean(batch):
    images, targets = batch
    student, teacher = TwoHeads(), linear(1)
    kd = build_loss("kd")
    out = DistillationTask(student, teacher, kd, heads="split")(images, targets)
    assert torch.allclose(out["ce"], F.cross_entropy(student.cls(images), targets))
    assert torch.allclose(out["kd"], kd(student.dist(images), teacher(images)))
    assert torch.allclose(out["output"], (student.cls(images) + student.dist(images)) / 2)  # = evaluation
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_two_head_student_without_teacher_trains_both_heads_on_labels(batch):
    images, targets = batch
    student = TwoHeads()
    out = DistillationTask(student)(images, targets)
    want = (F.cross_entropy(student.cls(images), targets) + F.cross_entropy(student.dist(images), targets)) / 2
    assert torch.allclose(out["loss"], want)
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_heads_combinations_that_would_not_train_what_is_evaluated_are_refused(batch):
    images, targets = batch
    with pytest.raises(ValueError, match="heads='split'"):  # distillation head untrained
        DistillationTask(TwoHeads(), linear(1), build_loss("kd"))(images, targets)
    with pytest.raises(ValueError, match="two-head"):  # split on a one-head student
        DistillationTask(linear(0), linear(1), build_loss("kd"), heads="split")(images, targets)
    with pytest.raises(ValueError, match="no criterion"):
        DistillationTask(TwoHeads(), heads="split")


def test_crld_with_a_two_head_student_splits_heads_per_view(batch):
    images, targets = batch
    strong = images.flip(0)
    student, teacher, crld = TwoHeads(), linear(1), build_loss("crld")
    out = DistillationTask(student, teacher, crld, heads="split")((images, strong), targets)
    want_ce = F.cross_entropy(student.cls(images), targets) + F.cross_entropy(student.cls(strong), targets)
    want_kd = crld(student.dist(images), student.dist(strong), teacher(images), teacher(strong))
    assert torch.allclose(out["ce"], want_ce) and torch.allclose(out["kd"], want_kd)


class BNNet(nn.Module):
    """Linear -> BatchNorm1d -> Linear: outputs and running statistics depend on which samples share a batch."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 5))

    def forward(self, x):
        return self.net(x)


def test_two_view_task_normalises_each_view_with_its_own_batch_statistics(batch):
    """The CRLD authors run weak and strong views through each network separately (B each, not 2B)."""
    images, targets = batch
    strong = 3.0 * images.flip(0) + 1.0  # a view with other statistics
    student, teacher, crld = BNNet(0), BNNet(1), build_loss("crld")
    twin_student, twin_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    out = DistillationTask(student, teacher, crld)((images, strong), targets)

    s_weak, s_strong = twin_student(images), twin_student(strong)  # two forwards, in the task's order
    with torch.no_grad():
        t_weak, t_strong = twin_teacher(images), twin_teacher(strong)
    assert torch.allclose(out["kd"], crld(s_weak, s_strong, t_weak, t_strong))
    for mine, twin in ((student, twin_student), (teacher, twin_teacher)):
        assert torch.equal(mine.net[1].running_mean, twin.net[1].running_mean)
        assert torch.equal(mine.net[1].running_var, twin.net[1].running_var)
    # ...which is not what one concatenated batch of 2B gives
    pooled = copy.deepcopy(twin_student).train()
    s_weak_pooled = pooled(torch.cat([images, strong]))[:8]
    assert not torch.allclose(s_weak_pooled, s_weak, atol=1e-4)


def test_ensemble_averages_teacher_logits(batch):
    images, _ = batch
    a, b = linear(1), linear(2)
    assert torch.allclose(TeacherEnsemble([a, b])(images), (a(images) + b(images)) / 2)
