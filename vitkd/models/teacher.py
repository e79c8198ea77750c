"""Both sides of a distillation pair, built with ``timm.create_model``: a frozen teacher and a student.

Weights come from local files through :func:`~vitkd.models.weights.load_weights` (strict, every
mismatch named) rather than timm's ``pretrained_cfg_overlay=dict(file=...)``, which silently
re-initialises a head whose class count differs from the cfg's unless the overlay repeats it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from os import PathLike
from typing import Any

import timm
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from vitkd.models.weights import load_weights

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
    **kwargs: Any,
) -> nn.Module:
    """A trainable ``timm.create_model(name, ...)``, initialised from ``checkpoint`` when given.

    ``checkpoint`` takes the forms of :func:`create_teacher`. Unlike a teacher's, a student's head may
    start fresh: with ``"timm"`` / ``"hf-hub:..."`` weights of another class count timm re-initialises it
    (logged); with a local file pass ``ignore=["<head>.*"]`` (see ``load_weights``).
    """
    return _create(name, num_classes, in_chans, checkpoint, new_head_ok=True, ignore=ignore, **kwargs)


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
    if checkpoint is not None and (checkpoint == TIMM_PRETRAINED or str(checkpoint).startswith(HUB_PREFIX)):
        return _create_pretrained(name, str(checkpoint), num_classes, in_chans, new_head_ok, **kwargs)
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if checkpoint is not None:
        load_weights(model, checkpoint, ignore=ignore)
    return model


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
    if pretrained_classes == num_classes:
        return
    if not new_head_ok:
        raise ValueError(
            f"{source} has a {pretrained_classes}-class head but num_classes={num_classes}: timm would "
            f"re-initialise it, and a teacher needs its trained head. Pass num_classes={pretrained_classes} "
            "or a checkpoint trained for your classes."
        )
    _logger.warning(
        "%s: new %d-class head (pretrained head has %d classes)", source, num_classes, pretrained_classes
    )
