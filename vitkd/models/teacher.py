"""Both sides of a distillation pair, built with ``timm.create_model``: a frozen teacher and a student.

Weights come from local files through :func:`~vitkd.models.weights.load_weights` (strict, every
mismatch named) rather than timm's ``pretrained_cfg_overlay=dict(file=...)``, which silently
re-initialises a head whose class count differs from the cfg's unless the overlay repeats it.

:func:`adapt_teacher` gives a teacher the inputs it was trained on when the student's data are
normalised or sized differently (e.g. timm's ImageNet DeiT-S teaching a 32 px CIFAR student).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
import torch.nn.functional as F
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from vitkd.models.weights import CheckpointMismatchError, load_weights

if TYPE_CHECKING:
    from vitkd.data import DataInfo

_logger = logging.getLogger(__name__)

TIMM_PRETRAINED = "timm"  # checkpoint value: timm's own pretrained weights for the (tagged) model name
HUB_PREFIX = "hf-hub:"  # checkpoint prefix: a timm model repository on the Hugging Face Hub

Checkpoint = str | PathLike[str] | None


def freeze(model: nn.Module) -> nn.Module:
    """Make ``model`` a fixed function for distillation and return it (changed in place).

    Its parameters stop requiring grad, it goes to eval mode and stays there: ``model.train()``, also
    when called by a parent module's ``train()``, leaves it and all its submodules in eval mode, so
    BatchNorm running statistics never change and dropout stays off. (``del model.train`` undoes that.)
    """
    model.requires_grad_(False)
    # an instance attribute shadows nn.Module.train for this module only; partial (not a lambda)
    # keeps the model picklable and deep-copyable
    model.train = functools.partial(_train_stays_eval, model)
    return model.eval()


def _train_stays_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen module: whatever ``mode`` asks for, it and its children go to eval mode."""
    return nn.Module.train(module, False)


def create_teacher(
    name: str, *, num_classes: int, checkpoint: Checkpoint = None, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """A frozen (see :func:`freeze`) ``timm.create_model(name, ...)`` with the weights of ``checkpoint``.

    Args:
        name: a timm model name (vitkd's models included), with a pretrained tag if ``checkpoint="timm"``.
        num_classes: classes of the teacher's head; must match the checkpoint's.
        checkpoint: a local file or export folder (any source of ``load_weights``, loaded strictly);
            ``"timm"`` for timm's pretrained weights of ``name``; ``"hf-hub:<org>/<repo>"`` for a timm model
            on the Hugging Face Hub; None for random weights (logged as a warning: for smoke tests only).
        kwargs: further ``timm.create_model`` arguments (``img_size``, ``drop_path_rate`` ...).

    Raises:
        ValueError: the pretrained weights have another class count (timm would re-initialise the head)
            or another architecture, or timm has no pretrained weights for ``name``.
    """
    if checkpoint is None:
        _logger.warning("teacher %s has no checkpoint: its weights are random", name)
    model = _create(name, num_classes, in_chans, checkpoint, new_head_ok=False, ignore=(), **kwargs)
    return freeze(model)


def create_student(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    checkpoint: Checkpoint = None,
    ignore: Sequence[str] = (),
    reset_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A trainable ``timm.create_model(name, ...)``, initialised from ``checkpoint`` when given.

    ``checkpoint`` takes the forms of :func:`create_teacher`. ``reset_head=True`` loads everything but
    the classifier (timm's ``pretrained_cfg['classifier']``) and starts a new ``num_classes`` head:
    fine-tuning pretrained weights to other classes. Without it, weights whose head has another class
    count are refused (nothing is re-initialised silently).
    """
    if reset_head and checkpoint is None:
        raise ValueError("reset_head=True needs a checkpoint: a new head only makes sense on pretrained weights")
    model = _create(name, num_classes, in_chans, checkpoint, new_head_ok=reset_head, ignore=ignore, **kwargs)
    if reset_head and checkpoint is not None and _is_pretrained(checkpoint):
        model.reset_classifier(num_classes)  # timm kept the pretrained head when the class counts agree
    return model


def _is_pretrained(checkpoint: Checkpoint) -> bool:
    """Whether ``checkpoint`` names timm's pretrained weights (``timm`` or ``hf-hub:...``) rather than a file."""
    return checkpoint is not None and (checkpoint == TIMM_PRETRAINED or str(checkpoint).startswith(HUB_PREFIX))


def _create(
    name: str,
    num_classes: int,
    in_chans: int,
    checkpoint: Checkpoint,
    *,
    new_head_ok: bool,
    ignore: Sequence[str],
    **kwargs: Any,
) -> nn.Module:
    if "pretrained" in kwargs:
        raise TypeError(
            "pass checkpoint='timm' or checkpoint='hf-hub:<org>/<repo>' instead of pretrained=..., "
            "or a local checkpoint file / folder"
        )
    if _is_pretrained(checkpoint):
        return _create_pretrained(name, str(checkpoint), num_classes, in_chans, new_head_ok, **kwargs)
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if checkpoint is not None:
        heads = classifier_keys(model) if new_head_ok else ()
        try:
            load_weights(model, checkpoint, ignore=[*ignore, *(f"{h}.*" for h in heads)])
        except CheckpointMismatchError as err:
            if new_head_ok:
                raise
            raise CheckpointMismatchError(f"{err}\n  if the heads differ: {HEAD_ADVICE}") from err
    return model


def classifier_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of ``model``'s classifier(s) from timm's ``pretrained_cfg`` (``("head", "head_dist")``)."""
    heads = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return (heads,) if isinstance(heads, str) else tuple(heads)


def _create_pretrained(
    name: str, checkpoint: str, num_classes: int, in_chans: int, new_head_ok: bool, **kwargs: Any
) -> nn.Module:
    """timm's own pretrained loading, checked for the cases where timm would silently drop weights."""
    if checkpoint == TIMM_PRETRAINED:
        cfg = get_pretrained_cfg(name)
        if cfg is None or not cfg.has_weights:
            raise ValueError(
                f"timm has no pretrained weights for {name!r}: pass checkpoint=<local file or folder>"
            )
        _check_head(name, cfg.num_classes, num_classes, new_head_ok)  # before any download
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model = timm.create_model(
        checkpoint, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    architecture = model.pretrained_cfg.get("architecture")
    if architecture != split_model_name_tag(name)[0]:
        raise ValueError(f"{checkpoint} holds a {architecture!r}, not the requested {name!r}")
    _check_head(checkpoint, model.pretrained_cfg["num_classes"], num_classes, new_head_ok)
    return model


def _check_head(source: str, pretrained_classes: int, num_classes: int, new_head_ok: bool) -> None:
    if pretrained_classes == num_classes or new_head_ok:
        return
    raise ValueError(
        f"{source} has a {pretrained_classes}-class head but num_classes={num_classes}: timm would re-initialise "
        f"it. {HEAD_ADVICE}"
    )


# How to resolve a head whose class count differs from the data's, in recipe keys.
HEAD_ADVICE = (
    "For a student, set student.reset_head: true to start a new head for your classes. A teacher needs a "
    "head trained for your classes: fine-tune it first (a recipe with student: {name: <teacher name>, "
    "checkpoint: <these weights>, reset_head: true} and distill.method: none), then set teacher.checkpoint "
    "to that run's student/ export (README, 'Fine-tune the teacher, then distil')."
)


# ----------------------------------------------------------------------------- teacher inputs


@dataclass(frozen=True)
class InputSpec:
    """How images are prepared for a network: per-channel ``mean``/``std`` of [0, 1] pixels, square
    side ``image_size`` in pixels, and the resize ``interpolation`` (``bilinear``, ``bicubic``...)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    interpolation: str = "bilinear"


class TeacherInput(nn.Module):
    """The frozen ``teacher`` fed the student's batch converted to the teacher's own preprocessing.

    ``forward(images)`` takes images [B, C, H, W] normalised with ``data`` (``data.image_size`` px) and
    returns the teacher's logits for the same images normalised with ``teacher_spec`` and resized to
    ``teacher_spec.image_size`` (on the batch's device, inside autocast). Without a resize the
    conversion is the affine map ``x · std_d / std_t + (mean_d − mean_t) / std_t``; with one, pixels
    are recovered, resized with the teacher's interpolation, clipped to [0, 1] (as an 8-bit image
    resize would) and normalised for the teacher. Hand-written because timm's distillation task only
    re-normalises (it assumes equal sizes) and builds the teacher itself.
    """

    def __init__(self, teacher: nn.Module, data: InputSpec, teacher_spec: InputSpec) -> None:
        super().__init__()
        if len(data.mean) != len(teacher_spec.mean):
            raise ValueError(f"data has {len(data.mean)} channels but the teacher's mean/std have "
                             f"{len(teacher_spec.mean)}")
        self.teacher = teacher
        self.data, self.teacher_spec = data, teacher_spec
        for name, values in (("data_mean", data.mean), ("data_std", data.std),
                             ("teacher_mean", teacher_spec.mean), ("teacher_std", teacher_spec.std)):
            self.register_buffer(name, torch.tensor(values).view(1, -1, 1, 1), persistent=False)
        freeze(self)

    @property
    def resizes(self) -> bool:
        return self.data.image_size != self.teacher_spec.image_size

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] normalised as the data -> [B, C, h, w] normalised and sized for the teacher."""
        if not self.resizes:
            return images * (self.data_std / self.teacher_std) + (self.data_mean - self.teacher_mean) / self.teacher_std
        pixels = images * self.data_std + self.data_mean
        size, mode = self.teacher_spec.image_size, self.teacher_spec.interpolation
        smooth = mode in ("bilinear", "bicubic")  # the modes that take align_corners / antialias
        pixels = F.interpolate(pixels, size=(size, size), mode=mode, align_corners=False if smooth else None,
                               antialias=smooth and size < self.data.image_size)
        return (pixels.clamp(0, 1) - self.teacher_mean) / self.teacher_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(self.convert(images))


def teacher_input_spec(teacher: nn.Module, checkpoint: Checkpoint, in_chans: int) -> InputSpec | None:
    """The preprocessing ``teacher``'s weights were trained with, or None when the checkpoint does not say.

    Known for timm's weights (``checkpoint`` ``timm`` / ``hf-hub:...``: the model's ``pretrained_cfg``) and
    for export folders (their ``config.json``); a bare ``.pth``/``.safetensors`` file records none. For a
    1-channel dataset a 3-channel spec is averaged over channels (timm sums the stem's RGB filters when
    building a 1-channel model).
    """
    if _is_pretrained(checkpoint):
        cfg = teacher.pretrained_cfg
    elif checkpoint is not None and (Path(checkpoint) / "config.json").is_file():
        from vitkd.export import read_export_config  # vitkd.export imports this module

        cfg = read_export_config(checkpoint).get("pretrained_cfg", {})
    else:
        return None
    if not {"mean", "std", "input_size"} <= set(cfg):
        return None
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if in_chans == 1 and len(mean) == 3:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    height, width = cfg["input_size"][-2:]
    if height != width:
        raise ValueError(f"teacher input size {height}x{width} is not square; vitkd's data are square")
    return InputSpec(mean, std, int(height), cfg.get("interpolation") or "bilinear")


def adapt_teacher(teacher: nn.Module, data_info: DataInfo, checkpoint: Checkpoint) -> nn.Module:
    """``teacher`` wrapped in :class:`TeacherInput` when its weights expect other inputs than the data's.

    ``data_info``: what the loaders produce (its ``mean``, ``std``, ``image_size``). Returns ``teacher``
    itself when the preprocessing is the same or unknown (see :func:`teacher_input_spec`: a bare
    weights file is assumed to share the data's).
    """
    data = InputSpec(tuple(data_info.mean), tuple(data_info.std), data_info.image_size)
    spec = teacher_input_spec(teacher, checkpoint, len(data.mean))
    if spec is None or (spec.mean, spec.std, spec.image_size) == (data.mean, data.std, data.image_size):
        return teacher
    return TeacherInput(teacher, data, spec)


def teacher_input_record(teacher: nn.Module) -> list[dict[str, Any]]:
    """For ``run_info.json``: per teacher (ensemble members in order), how its inputs are made from the
    student's batch."""
    records = []
    for member in getattr(teacher, "members", [teacher]):
        if isinstance(member, TeacherInput):
            records.append({"adapted": True, "data": asdict(member.data), "teacher": asdict(member.teacher_spec),
                            "resized": member.resizes})
        else:
            records.append({"adapted": False, "reason": "the teacher's recorded preprocessing equals the data's, "
                            "or its checkpoint records none (a bare weights file is assumed to share the data's)"})
    return records
