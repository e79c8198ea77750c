"""Input checks shared by every loss: shapes, labels, batch size, finiteness, hyperparameters.

Each check raises ``ValueError`` (``TypeError`` for a wrong label dtype) with a message that names the
offending argument and the fix. Checks that read tensor values cost one reduction per tensor and one
host synchronisation per call.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_batch_statistics",
    "check_in_range",
    "check_logits",
    "check_matrix",
    "check_min_classes",
    "check_positive",
    "check_target",
]


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")


def check_logits(**logits: Tensor) -> None:
    """Check that every named tensor is a finite, non-empty B×C matrix and that all share one shape.

    Keyword names are the argument names used in messages, e.g.
    ``check_logits(student_logits=s, teacher_logits=t)``.
    """
    (first_name, first), *others = logits.items()
    for name, tensor in logits.items():
        check_matrix(name, tensor)
    for name, tensor in others:
        if tensor.shape != first.shape:
            raise ValueError(
                f"{first_name} and {name} must have the same (batch, classes) shape, "
                f"got {tuple(first.shape)} and {tuple(tensor.shape)}"
            )
    _check_finite(logits)


def check_matrix(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a non-empty (batch, classes) matrix."""
    if tensor.ndim != 2 or tensor.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty (batch, classes) matrix, got shape {tuple(tensor.shape)}"
        )


def _check_finite(tensors: dict[str, Tensor]) -> None:
    """Raise ``ValueError`` naming each tensor that holds NaN or ±inf.

    Fast path: one float32 sum per tensor and one host sync; a NaN or inf element always makes the
    sum non-finite, so a finite sum clears the tensor. A non-finite sum can also come from overflow of
    huge finite values, so only then is the exact element-wise test run, to confirm before raising.
    """
    with torch.no_grad():
        sums = torch.stack([t.sum(dtype=torch.float32) for t in tensors.values()])
        if bool(sums.isfinite().all()):
            return
        bad = [name for name, t in tensors.items() if not bool(t.isfinite().all())]
    if bad:
        raise ValueError(f"{' and '.join(bad)} contain{'s' if len(bad) == 1 else ''} NaN/inf")


def check_target(target: Tensor, logits: Tensor, name: str = "target") -> None:
    """Check class labels: integer dtype, shape (B,) matching ``logits`` (B×C), values in [0, C)."""
    batch, num_classes = logits.shape
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (e.g. torch.long), got dtype {target.dtype}")
    if target.shape != (batch,):
        raise ValueError(
            f"{name} must have shape ({batch},) to match logits of shape {tuple(logits.shape)}, "
            f"got {tuple(target.shape)} (class indices, not one-hot)"
        )
    low, high = (int(v) for v in torch.aminmax(target))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] for {num_classes} classes, got values in [{low}, {high}]"
        )


def check_batch_statistics(logits: Tensor, name: str = "student_logits") -> None:
    """Losses built on per-class statistics over the batch need at least two samples."""
    if logits.shape[0] < 2:
        raise ValueError(
            f"{name} has a batch of {logits.shape[0]}: per-class batch statistics need ≥ 2 samples; "
            "use drop_last=True in the DataLoader"
        )


def check_min_classes(logits: Tensor, minimum: int, reason: str, name: str = "student_logits") -> None:
    """Raise ``ValueError`` when ``logits`` has fewer than ``minimum`` classes (columns)."""
    if logits.shape[1] < minimum:
        raise ValueError(f"{name} has {logits.shape[1]} classes; {reason} needs at least {minimum}")
