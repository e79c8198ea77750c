"""Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from vitkd.losses.functional import softened_kl, upcast
from vitkd.losses.registry import DistillationLoss, register_loss
from vitkd.losses.validation import check_logits, check_min_classes, check_positive, check_target

__all__ = ["DKDLoss"]


@register_loss("dkd")
class DKDLoss(DistillationLoss):
    """DKD: ``T² · (alpha · KL(b_t ‖ b_s) + beta · KL(p̂_t ‖ p̂_s))``, mean over the batch.

    With ``p = softmax(z/T)`` and y the label: ``b = [p_y, 1 − p_y]`` is the target-vs-rest binary
    distribution (TCKD term) and ``p̂`` the softmax over the C − 1 non-target classes (NCKD term).

    Inputs: student logits (B, C), teacher logits (B, C), labels (B,) of integer class indices in
    [0, C), C ≥ 2. Output: a scalar (float32, or float64 for float64 inputs). The teacher side is
    detached.

    The authors' code (which vitkd follows) multiplies both terms by T², which the paper's equation
    omits. It forms ``p̂`` by subtracting 1000 from the softened target logit and ``b`` by summing
    probabilities; here ``p̂`` drops the target column and ``b = softmax([z_y/T, logsumexp(z_{≠y}/T)])``:
    the same quantities computed in log space, so they stay exact for logits far beyond ±1000.
    The authors' linear warm-up ``min(epoch / 20, 1)`` is applied by the training task, not here.

    Args:
        alpha: weight of the target-class term (TCKD).
        beta: weight of the non-target term (NCKD); CIFAR recipes use 8, 6 or 2 (docs/methods.md §3).
        temperature: softmax temperature T (> 0).
    """

    requires_target = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        check_positive("temperature", temperature)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        check_logits(student_logits=student_logits, teacher_logits=teacher_logits)
        check_min_classes(student_logits, 2, "DKD's non-target term")
        check_target(target, student_logits)
        student = upcast(student_logits) / self.temperature
        teacher = upcast(teacher_logits.detach()) / self.temperature
        target = target.long()  # gather needs int64 indices
        student_rest, teacher_rest = _non_target(student, target), _non_target(teacher, target)
        target_kl = softened_kl(
            _target_vs_rest(student, student_rest, target),
            _target_vs_rest(teacher, teacher_rest, target),
            1.0,
        )
        non_target_kl = softened_kl(student_rest, teacher_rest, 1.0)
        return self.temperature**2 * (self.alpha * target_kl + self.beta * non_target_kl).mean()


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """(B, C) logits -> (B, C − 1): each row without its target column, class order kept."""
    batch, num_classes = logits.shape
    columns = torch.arange(num_classes - 1, device=logits.device).expand(batch, -1)
    return logits.gather(1, columns + (columns >= target[:, None]))


def _target_vs_rest(logits: Tensor, non_target: Tensor, target: Tensor) -> Tensor:
    """(B, 2) logits ``[z_y, logsumexp(z_{≠y})]``, whose softmax is ``[p_y, 1 − p_y]`` for p = softmax(z)."""
    target_logit = logits.gather(1, target[:, None])
    return torch.cat([target_logit, non_target.logsumexp(1, keepdim=True)], dim=1)
