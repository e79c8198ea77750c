"""The training task: one call turns a batch into a dict of losses, like ``timm.task``.

``DistillationTask(images, targets, indices=None) -> {"loss", "output", "ce", "kd", ...}`` where
``loss`` is the scalar to back-propagate, ``output`` the student logits used for metrics (B×C,
float32), and every other entry a detached component for logging. ``indices`` (int64 [B], the dataset
rows of the batch, as training batches carry them) are needed only when the teacher's logits come from
a :class:`~vitkd.teacher_cache.TeacherLogitCache` instead of a live teacher.

The teacher is held as a plain attribute, not a registered sub-module, so it can never reach the
optimiser, DDP or a saved state; it runs under ``torch.no_grad`` and its logits are upcast to float32
before the loss (Accelerate upcasts the prepared student's outputs, not an unprepared teacher's).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn

__all__ = ["DistillationTask", "TeacherEnsemble", "TeacherLogitSource"]


class TeacherLogitSource(Protocol):
    """Stored teacher logits (e.g. :class:`vitkd.teacher_cache.TeacherLogitCache`)."""

    def logits(self, epoch: int, indices: Tensor, view: int) -> Tensor:
        """Logits float32 (B, classes) of rows ``indices`` (B,) in 0-based ``epoch``, augmented ``view``."""


class TeacherEnsemble(nn.Module):
    """Averages the logits of several frozen teachers (paper Fig. 4d, "logit averaging ensemble")."""

    def __init__(self, teachers: list[nn.Module]):
        super().__init__()
        if not teachers:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.members = nn.ModuleList(teachers)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> mean logits (B, classes), float32."""
        return torch.stack([m(images).float() for m in self.members]).mean(0)


class DistillationTask:
    """Student + frozen teacher + a ``vitkd.losses`` loss (or none) -> a dict of losses.

    Args:
        student: the (possibly Accelerate-prepared) student.
        teacher: frozen teacher (or ``TeacherEnsemble``); ``None`` for plain supervised training, or
            when ``teacher_cache`` gives the teacher's logits.
        criterion: a loss from ``vitkd.losses``; ``None`` for plain supervised training.
        ce_weight: weight of cross-entropy on the labels (per view for two-view methods).
        kd_weight: weight of the distillation loss.
        warmup_epochs: the distillation term is scaled by ``min(epoch / warmup_epochs, 1)`` with
            1-based epochs (docs/methods.md §1); 0 or 1 means no ramp. Call :meth:`set_epoch`.
        heads: where the losses go on a two-head (DeiT-distilled) student, which returns a
            ``(cls, dist)`` pair in training mode and the mean of the two heads in evaluation:
            ``split`` puts CE on the class head and distillation on the distillation head (DeiT);
            ``cls`` is for one-head students. A two-head student without a teacher learns the labels
            with both heads (mean of the two CE terms), so that the evaluated average is trained.
            A two-head student with a teacher and ``heads="cls"`` is refused: its distillation head
            would get no gradient yet count in every evaluation.
        teacher_cache: stored logits looked up by (epoch - 1, batch indices, view) instead of running
            ``teacher`` (which must then be ``None``).
        label_smoothing: smoothing of the cross-entropy on hard labels (PyTorch's
            ``F.cross_entropy(label_smoothing=…)``). Soft (B, C) targets from Mixup/CutMix carry their
            own smoothing (timm's ``Mixup``) and use timm's ``SoftTargetCrossEntropy``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        criterion: nn.Module | None = None,
        *,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        warmup_epochs: int = 0,
        heads: str = "cls",
        teacher_cache: TeacherLogitSource | None = None,
        label_smoothing: float = 0.0,
    ):
        if teacher is not None and teacher_cache is not None:
            raise ValueError("give a teacher or a teacher_cache, not both")
        if (teacher is None and teacher_cache is None) != (criterion is None):
            raise ValueError("give both a teacher and a criterion, or neither (plain supervised training)")
        if heads not in ("cls", "split"):
            raise ValueError(f"heads must be 'cls' or 'split', got {heads!r}")
        if heads == "split" and criterion is None:
            raise ValueError("heads='split' puts distillation on the distillation head, but there is no criterion: "
                             "without a teacher use heads='cls' (both heads then learn the labels)")
        self.student = student
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.criterion = criterion
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.warmup_epochs = warmup_epochs
        self.heads = heads
        self.label_smoothing = label_smoothing
        self.num_views = getattr(criterion, "num_views", 1)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Set the current 1-based epoch (drives the warm-up ramp)."""
        self.epoch = epoch

    @property
    def kd_ramp(self) -> float:
        if self.warmup_epochs <= 1:
            return 1.0
        return min(self.epoch / self.warmup_epochs, 1.0)

    def __call__(
        self, images: Tensor | tuple[Tensor, Tensor], targets: Tensor, indices: Tensor | None = None
    ) -> dict[str, Tensor]:
        """images (B, C, H, W), or a (weak, strong) pair for two-view losses (CRLD); targets: class
        indices (B,) int64, or soft targets (B, classes) float from Mixup/CutMix; indices: the batch's
        dataset rows (B,), needed with a teacher cache.

        Each view goes through each network in its own forward of B images, so BatchNorm normalises
        every view with its own batch statistics (as the CRLD authors train).
        """
        views = images if self.num_views == 2 else (images,)
        if self.criterion is not None and getattr(self.criterion, "requires_target", False) and targets.ndim != 1:
            raise ValueError(f"{type(self.criterion).__name__} needs class indices (B,), got soft targets of shape "
                             f"{tuple(targets.shape)} (Mixup/CutMix): switch mixup off or use a loss without labels")
        # teacher first: its activations are freed before the student's graph is built, which measured
        # ~16 % faster on CPU (fewer page faults) and lowers peak memory
        teacher_logits = []
        if self.criterion is not None:
            teacher_logits = [self._teacher(view, i, indices) for i, view in enumerate(views)]
        passes = [self._student_pass(v, targets) for v in views]
        ce = sum(p.ce for p in passes)
        out = {"output": passes[0].output.detach(), "ce": ce.detach()}
        loss = self.ce_weight * ce
        if self.criterion is not None:
            label = [targets] if getattr(self.criterion, "requires_target", False) else []
            kd = self.criterion(*(p.kd_logits for p in passes), *teacher_logits, *label)
            loss = loss + self.kd_ramp * self.kd_weight * kd
            out["kd"] = kd.detach()
        out["loss"] = loss
        return out

    def _student_pass(self, images: Tensor, targets: Tensor) -> _StudentPass:
        """One student forward: its CE term, the logits the distillation loss sees, the logits for metrics."""
        logits = self.student(images)
        if not isinstance(logits, tuple):
            if self.heads == "split":
                raise ValueError("heads='split' needs a two-head (DeiT-distilled) student, but the student returned "
                                 "one logit matrix: use heads='cls'")
            logits = logits.float()
            return _StudentPass(self._ce(logits, targets), logits, logits)
        cls_logits, dist_logits = (x.float() for x in logits)  # DeiT-distilled student in training mode
        average = (cls_logits + dist_logits) / 2  # what the student outputs in evaluation
        if self.criterion is None:  # no teacher: both heads learn the labels
            ce = (self._ce(cls_logits, targets) + self._ce(dist_logits, targets)) / 2
            return _StudentPass(ce, None, average)
        if self.heads != "split":
            raise ValueError("a two-head (DeiT-distilled) student with heads='cls' would leave the distillation "
                             "head untrained though evaluation averages it in: use heads='split' (DeiT)")
        return _StudentPass(self._ce(cls_logits, targets), dist_logits, average)

    def _ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy on class indices (B,) with label smoothing, or on soft targets (B, classes)."""
        if targets.ndim == 2:
            return SoftTargetCrossEntropy()(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def _teacher(self, images: Tensor, view: int, indices: Tensor | None) -> Tensor:
        """Teacher logits float32 (B, classes) for ``images`` (augmented view number ``view``)."""
        if self.teacher_cache is None:
            return self.teacher(images).float()
        if indices is None:
            raise ValueError("a teacher cache needs the batch's dataset indices: call task(images, targets, indices)")
        return self.teacher_cache.logits(self.epoch - 1, indices, view).to(images.device)


class _StudentPass(NamedTuple):
    """One student forward on one view (float32 logits, (B, classes))."""

    ce: Tensor  # scalar cross-entropy term of this view
    kd_logits: Tensor | None  # what the distillation loss sees (None without a teacher)
    output: Tensor  # what metrics see: the evaluated logits (two heads: their mean)
