"""Small tensor helpers shared by the losses: float32 upcasting and the temperature-softened KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["softened_kl", "upcast"]


def upcast(tensor: Tensor) -> Tensor:
    """Return ``tensor`` in at least float32 (bf16/fp16 -> float32; float32/float64 unchanged)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample ``KL(softmax(teacher/T) ‖ softmax(student/T))`` over the last axis, in nats.

    Shapes: (B, C) and (B, C) -> (B,). No T² factor and no reduction over the batch: callers add them.
    Works in log space on both sides, so it stays finite for saturated distributions.
    """
    if temperature != 1.0:  # skip two B×C divisions (and one in backward) when they change nothing
        student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    log_p_student = F.log_softmax(student_logits, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)
