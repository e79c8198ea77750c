"""CRLD: consistency-regularised logit distillation (Zhang, Liu, Cai & Ma, "Cross-View Consistency
Regularisation for Knowledge Distillation", ACM MM 2024, arXiv:2412.16493)."""

from __future__ import annotations

from torch import Tensor

from vitkd.losses.functional import softened_kl, upcast
from vitkd.losses.registry import DistillationLoss, register_loss
from vitkd.losses.validation import check_in_range, check_logits, check_positive

__all__ = ["CRLDLoss"]


@register_loss("crld")
class CRLDLoss(DistillationLoss):
    """CRLD's distillation part: within-view plus cross-view KD, masked by teacher confidence.

    With ``k(a, b) = T² · KL(softmax(b/T) ‖ softmax(a/T))`` per sample and the confidence masks
    ``m_w = [max softmax(t_w) ≥ tau_weak]``, ``m_s = [max softmax(t_s) ≥ tau_strong]`` (teacher
    softmax at temperature 1, whatever T is)::

        within = mean_i m_w,i · (k(s_w, t_w) + k(s_s, t_s))
        cross  = mean_i m_s,i · (k(s_s, t_w) + k(s_w, t_s))
        loss   = within_weight · within + cross_weight · cross

    The means divide by the full batch B, not by the number of confident samples (authors' code).
    Inputs: four (B, C) logit matrices: student on the weak and the strong view, then teacher on the
    weak and the strong view. Output: a scalar (float32, or float64 for float64 inputs). The teacher
    side is detached. The two cross-entropy terms ``CE(s_w, y) + CE(s_s, y)`` belong to the training
    task; there is no warm-up.

    Args:
        temperature: softmax temperature T (> 0) of the KD terms (not of the masks).
        tau_weak: confidence threshold on the teacher's weak-view prediction, in [0, 1].
        tau_strong: confidence threshold on the teacher's strong-view prediction, in [0, 1].
        within_weight: weight of the within-view term.
        cross_weight: weight of the cross-view term.
    """

    num_views = 2

    def __init__(
        self,
        temperature: float = 4.0,
        tau_weak: float = 0.9,
        tau_strong: float = 0.2,
        within_weight: float = 2.0,
        cross_weight: float = 0.5,
    ):
        super().__init__()
        check_positive("temperature", temperature)
        check_in_range("tau_weak", tau_weak, 0.0, 1.0)
        check_in_range("tau_strong", tau_strong, 0.0, 1.0)
        self.temperature = temperature
        self.tau_weak = tau_weak
        self.tau_strong = tau_strong
        self.within_weight = within_weight
        self.cross_weight = cross_weight

    def forward(
        self, student_weak: Tensor, student_strong: Tensor, teacher_weak: Tensor, teacher_strong: Tensor
    ) -> Tensor:
        check_logits(
            student_weak=student_weak,
            student_strong=student_strong,
            teacher_weak=teacher_weak,
            teacher_strong=teacher_strong,
        )
        s_w, s_s = upcast(student_weak), upcast(student_strong)
        t_w, t_s = upcast(teacher_weak.detach()), upcast(teacher_strong.detach())
        within = _confident(t_w, self.tau_weak) * (self._kd(s_w, t_w) + self._kd(s_s, t_s))
        cross = _confident(t_s, self.tau_strong) * (self._kd(s_s, t_w) + self._kd(s_w, t_s))
        return (self.within_weight * within + self.cross_weight * cross).mean()

    def _kd(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Per-sample ``T² · KL``, shape (B,)."""
        return self.temperature**2 * softened_kl(student, teacher, self.temperature)


def _confident(teacher_logits: Tensor, threshold: float) -> Tensor:
    """(B, C) -> (B,) mask, 1.0 where the teacher's top softmax probability (T = 1) is ≥ threshold."""
    confidence = teacher_logits.softmax(dim=1).amax(dim=1)
    return (confidence >= threshold).to(teacher_logits.dtype)
