"""DeiT's hard and soft distillation: parity with float64 re-derivations, and the two-head path they serve."""

import pytest
import torch
from torch.testing import assert_close

from vitkd.data import DataInfo
from vitkd.engine.build import build_criterion, build_student
from vitkd.engine.task import DistillationTask
from vitkd.losses import DeiTHardLoss, DeiTSoftLoss, available_losses, build_loss
from vitkd.recipe import recipe_from_dict


def logits(seed, batch=16, classes=10):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(batch, classes, generator=g, dtype=torch.float64)


def ref_log_softmax(z):
    """log softmax written out: z - log Σ exp z, with the row maximum subtracted first."""
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def ref_hard(s, t):
    """−(1/B) Σ_i log softmax(s_i)[k_i], k_i = the teacher's top class (first on ties)."""
    k = torch.tensor([max(range(t.shape[1]), key=lambda c, row=row: (t[row, c].item(), -c)) for row in range(len(t))])
    return -ref_log_softmax(s)[torch.arange(len(s)), k].mean()


def ref_soft(s, t, temperature):
    """T²/(B·C) Σ_i Σ_c p_t,ic (log p_t,ic − log p_s,ic) at temperature T (DeiT's code divides by B·C)."""
    log_ps, log_pt = ref_log_softmax(s / temperature), ref_log_softmax(t / temperature)
    return temperature**2 * (log_pt.exp() * (log_pt - log_ps)).sum() / s.numel()


def test_registered_with_deit_defaults():
    assert {"deit_hard", "deit_soft"} <= set(available_losses())
    assert isinstance(build_loss("deit_hard"), DeiTHardLoss)
    soft = build_loss("deit_soft")
    assert isinstance(soft, DeiTSoftLoss) and soft.temperature == 1.0
    assert not soft.requires_target and not DeiTHardLoss.requires_target  # usable under Mixup/CutMix


@pytest.mark.parametrize(("name", "reference", "kwargs"), [
    ("deit_hard", ref_hard, {}),
    ("deit_soft", ref_soft, {"temperature": 3.0}),
])
def test_matches_independent_float64_derivation(name, reference, kwargs):
    loss = build_loss(name, **kwargs)
    s, t = logits(0).requires_grad_(), logits(1)
    value = loss(s, t)
    (grad,) = torch.autograd.grad(value, s)
    ref_s = s.detach().clone().requires_grad_()
    ref_value = reference(ref_s, t, **kwargs)
    (ref_grad,) = torch.autograd.grad(ref_value, ref_s)
    assert value.dtype == torch.float64 and value > 1e-3
    assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_hard_gradient_is_softmax_minus_teacher_one_hot():
    s, t = logits(2).requires_grad_(), logits(3)
    (grad,) = torch.autograd.grad(DeiTHardLoss()(s, t), s)
    one_hot = torch.nn.functional.one_hot(t.argmax(1), 10).double()
    assert_close(grad, (s.detach().softmax(1) - one_hot) / len(s), rtol=1e-10, atol=1e-12)


def test_soft_is_kd_divided_by_the_class_count():
    s, t = logits(4), logits(5)
    assert_close(DeiTSoftLoss(2.0)(s, t), build_loss("kd", temperature=2.0)(s, t) / 10, rtol=1e-12, atol=0)
    assert DeiTSoftLoss()(t, t) == 0


def test_low_precision_is_computed_in_float32():
    s, t = logits(6).float(), logits(7).float()
    for loss in (DeiTHardLoss(), DeiTSoftLoss(2.0)):
        value = loss(s.bfloat16(), t.bfloat16())
        assert value.dtype == torch.float32
        assert_close(value, loss(s.bfloat16().float(), t.bfloat16().float()), rtol=1e-6, atol=1e-7)


def test_split_heads_with_hard_distillation_train_both_heads():
    """DeiT's setting: CE on the class head, CE on the teacher's top class on the distillation head. A few
    steps move both heads, and the distillation head comes to agree with the teacher."""
    recipe = recipe_from_dict({
        "name": "deit_hard_split",
        "data": {"source": "digits", "transform": "none", "image_size": 16},
        "teacher": {"name": "cifar_resnet8"},
        "student": {"name": "deit_tiny_distilled_patch16_224",
                    "kwargs": {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "distill": {"method": "deit_hard", "heads": "split", "ce_weight": 0.5, "kd_weight": 0.5},
        "train": {"batch_size": 32},
    })
    torch.manual_seed(0)
    student = build_student(recipe.student, DataInfo(5, list("abcde"), 16, 3, (0.0,) * 3, (1.0,) * 3))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5)).requires_grad_(False)
    task = DistillationTask(student, teacher, build_criterion(recipe.distill), ce_weight=0.5, kd_weight=0.5,
                            heads="split")
    images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 5, (32,))
    teacher_top = teacher(images).argmax(1)
    before = {h: getattr(student, h).weight.detach().clone() for h in ("head", "head_dist")}
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        task(images, labels)["loss"].backward()
        optimizer.step()
    for head, weight in before.items():
        assert not torch.allclose(getattr(student, head).weight, weight), head
    cls_out, dist_out = student(images)
    assert (dist_out.argmax(1) == teacher_top).float().mean() > 0.9  # the distillation head learns the teacher
    assert (cls_out.argmax(1) == labels).float().mean() > 0.9  # the class head learns the labels
