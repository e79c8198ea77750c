"""freeze keeps a teacher fixed inside a training parent; create_teacher / create_student build the pair."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
import timm
import torch
from torch import nn

from vitkd.models import create_student, create_teacher, freeze

NAME = "cifar_resnet8"


def _model(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(NAME, num_classes=num_classes)


def _batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def _all_in_eval(model: nn.Module) -> bool:
    return not any(m.training for m in model.modules())


def test_frozen_teacher_keeps_batchnorm_stats_inside_a_training_parent():
    teacher, control = freeze(_model()), _model()  # control: the same steps move an unfrozen model's stats
    pair = nn.ModuleDict({"teacher": teacher, "student": _model(seed=1), "control": control})
    before, control_before = _batchnorm_buffers(teacher), _batchnorm_buffers(control)
    pair.train()
    torch.manual_seed(2)
    for _ in range(3):
        x = torch.randn(4, 3, 32, 32)
        loss = (pair["student"](x) - teacher(x)).square().mean() + control(x).square().mean()
        loss.backward()
    assert pair["student"].training and control.training and _all_in_eval(teacher)
    assert all(torch.equal(before[k], v) for k, v in _batchnorm_buffers(teacher).items())
    assert not all(torch.equal(control_before[k], v) for k, v in _batchnorm_buffers(control).items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_train_on_the_frozen_model_itself_keeps_eval():
    teacher = freeze(_model())
    assert teacher.train() is teacher and _all_in_eval(teacher)
    assert teacher.train(True) is teacher and _all_in_eval(teacher)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_copies_stay_frozen(clone):
    teacher = clone(freeze(_model()))
    teacher.train()
    assert _all_in_eval(teacher) and not any(p.requires_grad for p in teacher.parameters())


def test_create_teacher_from_release_checkpoint(tmp_path):
    source = _model(num_classes=100, seed=1).eval()
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt_epoch_240.pth")
    teacher = create_teacher(NAME, num_classes=100, checkpoint=tmp_path / "ckpt_epoch_240.pth")
    teacher.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), source(x))
    assert _all_in_eval(teacher) and not any(p.requires_grad for p in teacher.parameters())


def test_create_teacher_refuses_a_checkpoint_of_another_class_count(tmp_path):
    torch.save({"model": _model(num_classes=100).state_dict()}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match="has 100 classes, model has 10"):
        create_teacher(NAME, num_classes=10, checkpoint=tmp_path / "ckpt.pth")


def test_create_teacher_without_checkpoint_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="vitkd.models.teacher"):
        teacher = create_teacher(NAME, num_classes=10)
    assert "its weights are random" in caplog.text and _all_in_eval(teacher)


def test_timm_pretrained_checks_happen_before_any_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="timm has no pretrained weights for 'cifar_resnet8'"):
        create_teacher(NAME, num_classes=100, checkpoint="timm")
    with pytest.raises(
        ValueError, match="has a 1000-class head but num_classes=10: timm would re-initialise it"
    ):
        create_teacher("resnet18.a1_in1k", num_classes=10, checkpoint="timm")


def test_pretrained_flag_is_refused():
    with pytest.raises(TypeError, match="checkpoint='timm'"):
        create_student(NAME, num_classes=10, pretrained=True)


def test_create_student_fine_tunes_a_new_head(tmp_path):
    source = _model(num_classes=100, seed=1)
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt.pth")
    student = create_student(
        NAME, num_classes=10, in_chans=3, checkpoint=tmp_path / "ckpt.pth", ignore=["fc.*"]
    )
    student.train()
    assert student.training and all(p.requires_grad for p in student.parameters())
    assert torch.equal(student.conv1.weight, source.conv1.weight) and student.fc.out_features == 10
