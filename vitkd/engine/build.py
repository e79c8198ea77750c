"""From recipe sections to live objects: the student, the frozen teacher(s), the loss."""

from __future__ import annotations

from torch import nn

from vitkd.data import DataInfo
from vitkd.losses import build_loss
from vitkd.models import adapt_teacher, create_student, create_teacher
from vitkd.recipe import DistillConfig, ModelConfig

__all__ = ["build_criterion", "build_student", "build_teacher"]


def build_student(cfg: ModelConfig, info: DataInfo) -> nn.Module:
    """The student with the dataset's class count and channels; a DeiT-distilled student returns both
    heads in training mode (``set_distilled_training``) so the task can route losses per head."""
    student = create_student(
        cfg.name, num_classes=info.num_classes, in_chans=info.in_chans, checkpoint=cfg.checkpoint,
        ignore=cfg.ignore, reset_head=cfg.reset_head, **cfg.kwargs,
    )
    if hasattr(student, "set_distilled_training"):
        student.set_distilled_training(True)
    return student


def build_teacher(cfgs: list[ModelConfig], info: DataInfo) -> nn.Module | None:
    """The frozen teacher, or the logit-averaging ensemble of several; None when there is none."""
    from vitkd.engine.task import TeacherEnsemble

    teachers = [  # each fed the student's batch in its own preprocessing (adapt_teacher)
        adapt_teacher(create_teacher(c.name, num_classes=info.num_classes, in_chans=info.in_chans,
                                     checkpoint=c.checkpoint, **c.kwargs), info, c.checkpoint)
        for c in cfgs
    ]
    if not teachers:
        return None
    return teachers[0] if len(teachers) == 1 else TeacherEnsemble(teachers)


def build_criterion(cfg: DistillConfig) -> nn.Module | None:
    return None if cfg.method == "none" else build_loss(cfg.method, **cfg.kwargs)
