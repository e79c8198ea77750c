"""Classic knowledge distillation (Hinton, Vinyals & Dean, 2015)."""

from __future__ import annotations

from torch import Tensor

from vitkd.losses.functional import softened_kl, upcast
from vitkd.losses.registry import DistillationLoss, register_loss
from vitkd.losses.validation import check_logits, check_positive

__all__ = ["KDLoss"]


@register_loss("kd")
class KDLoss(DistillationLoss):
    """Hinton's soft-target loss: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``, mean over the batch.

    Inputs: student and teacher logits, (B, C) each. Output: a scalar (float32, or float64 for
    float64 inputs). The teacher side is detached. The T² factor keeps gradient magnitudes comparable
    across temperatures (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).

    Args:
        temperature: softmax temperature T (> 0). Default 4 (CIFAR recipes; ImageNet uses 1).
    """

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logits(student_logits=student_logits, teacher_logits=teacher_logits)
        student, teacher = upcast(student_logits), upcast(teacher_logits.detach())
        return self.temperature**2 * softened_kl(student, teacher, self.temperature).mean()
