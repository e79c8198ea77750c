"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022)."""

from __future__ import annotations

from torch import Tensor

from vitkd.losses.functional import upcast
from vitkd.losses.registry import DistillationLoss, register_loss
from vitkd.losses.validation import check_batch_statistics, check_logits, check_positive

__all__ = ["DISTLoss"]

_NORM_EPS = 1e-8  # added to the product of norms in the Pearson correlation (authors' code)


@register_loss("dist")
class DISTLoss(DistillationLoss):
    """DIST: Pearson-correlation matching of softened predictions, across classes and across the batch.

    With ``y = softmax(z/T)`` (B×C) and ``pearson(a, b)`` the cosine similarity of the mean-centred
    vectors (1e-8 added to the product of their norms)::

        inter = 1 − mean_i pearson(y_s[i, :], y_t[i, :])    # each sample, across classes
        intra = 1 − mean_j pearson(y_s[:, j], y_t[:, j])    # each class, across the batch
        loss  = T² · (beta · inter + gamma · intra)

    The intra-class term uses per-class statistics over the batch, so B ≥ 2 (use ``drop_last=True``).
    Inputs: student and teacher logits, (B, C) each. Output: a scalar (float32, or float64 for float64
    inputs). The teacher side is detached. The 1e-8 follows the authors' code (the paper's Pearson
    distance has none).

    Args:
        beta: weight of the inter-class (per-sample) term. ImageNet default 1; CIFAR commonly 2.
        gamma: weight of the intra-class (per-class) term. ImageNet default 1; CIFAR commonly 2.
        temperature: softmax temperature T (> 0). ImageNet default 1; CIFAR commonly 4.
    """

    uses_batch_statistics = True
    needs_dense_teacher_logits = True

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0):
        super().__init__()
        check_positive("temperature", temperature)
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logits(student_logits=student_logits, teacher_logits=teacher_logits)
        check_batch_statistics(student_logits)
        student = (upcast(student_logits) / self.temperature).softmax(dim=1)
        teacher = (upcast(teacher_logits.detach()) / self.temperature).softmax(dim=1)
        inter = 1 - _pearson(student, teacher, dim=1).mean()
        intra = 1 - _pearson(student, teacher, dim=0).mean()
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)


def _pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` (same shape) along ``dim``; that axis is reduced away."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + _NORM_EPS)
