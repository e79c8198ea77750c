"""DeiT's distillation losses (Touvron et al., "Training data-efficient image transformers & distillation
through attention", ICML 2021, §4; docs/methods.md §8).

Both take the student's distillation logits: with a two-head (DeiT-distilled) student and
``distill.heads: split`` that is the distillation token's head, otherwise the class head. DeiT weighs
the label and the distillation terms 1/2 each (``ce_weight: 0.5``, ``kd_weight: 0.5``). Neither uses
the labels, so both work under Mixup/CutMix (the teacher sees the mixed images).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vitkd.losses.functional import upcast
from vitkd.losses.kd import KDLoss
from vitkd.losses.registry import DistillationLoss, register_loss
from vitkd.losses.validation import check_logits

__all__ = ["DeiTHardLoss", "DeiTSoftLoss"]


@register_loss("deit_hard")
class DeiTHardLoss(DistillationLoss):
    """Hard-label distillation: ``CE(z_s, argmax_c z_t)``, mean over the batch.

    The teacher's top class is the target, whatever its confidence (ties go to the lowest class index,
    as ``argmax``). Inputs: student and teacher logits, (B, C) each. Output: a scalar (float32, or
    float64 for float64 inputs); no gradient reaches the teacher (argmax has none).
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logits(student_logits=student_logits, teacher_logits=teacher_logits)
        return F.cross_entropy(upcast(student_logits), teacher_logits.argmax(dim=1))


@register_loss("deit_soft")
class DeiTSoftLoss(KDLoss):
    """DeiT's soft distillation: ``T² · Σ_i KL(softmax(z_t,i/T) ‖ softmax(z_s,i/T)) / (B · C)``.

    DeiT's code divides the summed KL by the number of logits B·C, not by the batch B as its paper's
    formula and Hinton's KD (``kd``) do, so this is ``KDLoss(T) / C``: vitkd follows the code, which
    produced DeiT's numbers. Inputs: student and teacher logits, (B, C) each. Output: a scalar
    (float32, or float64 for float64 inputs). The teacher side is detached.

    Args:
        temperature: softmax temperature T (> 0). DeiT's code defaults to 1; its paper's soft-distillation
            runs use T 3 with the distillation weight 0.1.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return super().forward(student_logits, teacher_logits) / student_logits.shape[-1]
