"""Export a trained student as a timm Hub folder: ``model.safetensors`` + timm's ``config.json``.

The folder is exactly what ``timm.create_model('local-dir:<dir>', pretrained=True)`` rebuilds, and,
once pushed (:mod:`vitkd.hub`), what ``timm.create_model('hf-hub:<owner>/<name>', pretrained=True)`` does.
Serialisation is timm's own ``save_for_hf``; this module adds argument checks, the removal of metadata
that describes timm's released weights rather than the student, a load check, and an atomic swap.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import timm
from accelerate.utils import extract_model_from_parallel
from timm.models import save_for_hf
from torch import nn

EXPORT_FILES = ("model.safetensors", "config.json")

# save_for_hf copies the architecture's default pretrained_cfg into config.json. These keys describe
# timm's released checkpoint of that architecture (its tag, licence, paper), not the distilled student.
_SOURCE_CHECKPOINT_KEYS = (
    "tag",
    "license",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "hf_hub_filename",
)


def export_student(
    model: nn.Module,
    out_dir: str | Path,
    *,
    architecture: str,
    model_args: dict | None = None,
    num_classes: int,
    in_chans: int = 3,
    label_names: Sequence[str] | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: tuple[int, int, int],
    crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> Path:
    """Write ``model``'s weights and timm config to ``out_dir``, replacing any previous export atomically.

    Args:
        model: a timm-built model (it carries ``pretrained_cfg``), possibly wrapped by DDP/DataParallel
            or ``torch.compile``; the wrappers are removed. The model itself is not modified.
        out_dir: the export folder. It is written as a temporary sibling and renamed into place only
            once complete and loadable, so a crash never leaves a half-written export.
        architecture: timm model name recorded in config.json (``vitkd.models.export_spec`` gives it
            for vitkd's models); must be registered with timm.
        model_args: keyword arguments that, with ``architecture``, rebuild the same network
            (``timm.create_model(architecture, **model_args)``); timm adds those it recorded itself.
        num_classes: classifier outputs; must equal ``model.num_classes``.
        in_chans: image channels; must equal ``input_size[0]``.
        label_names: one name per class index, or None.
        mean, std: per-channel normalisation of the [0, 1] input, ``in_chans`` values each.
        input_size: (C, H, W) in pixels the student was evaluated at.
        crop_pct: evaluation centre-crop fraction (1.0: no crop, as on CIFAR; 0.875 for the ImageNet
            Resize(256) + CenterCrop(224) protocol).
        interpolation: resize interpolation used at evaluation (``'bilinear'``, ``'bicubic'``, ...).

    Returns:
        ``out_dir`` as a Path, holding exactly ``model.safetensors`` and ``config.json``.
    """
    model = extract_model_from_parallel(model, keep_torch_compile=False)
    _check_export_args(
        model,
        architecture=architecture,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=input_size,
        mean=mean,
        std=std,
        label_names=label_names,
        crop_pct=crop_pct,
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_for_hf(
            model,
            str(staging),
            model_config={
                "pretrained_cfg": {"architecture": architecture},
                **({"label_names": list(label_names)} if label_names else {}),
            },
            model_args={**(model_args or {}), "num_classes": num_classes, "in_chans": in_chans},
            safe_serialization=True,
            data_config={
                "input_size": tuple(input_size),
                "mean": tuple(mean),
                "std": tuple(std),
                "crop_pct": crop_pct,
                "crop_mode": "center",
                "interpolation": interpolation,
            },
        )
        _drop_source_checkpoint_metadata(staging / "config.json")
        _check_timm_rebuilds(staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_export_args(
    model: nn.Module,
    *,
    architecture: str,
    in_chans: int,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    label_names: Sequence[str] | None,
    crop_pct: float,
) -> None:
    """Raise a ValueError/TypeError naming the argument for inputs timm would export wrongly or not at all."""
    if not hasattr(model, "pretrained_cfg"):
        raise TypeError(
            f"export_student needs a timm model (built with timm.create_model), got {type(model).__name__} "
            "without a pretrained_cfg."
        )
    if not timm.is_model(architecture):
        raise ValueError(
            f"architecture={architecture!r} is not registered with timm, so the export could not be loaded; "
            "use a timm model name (vitkd.models.export_spec gives the right one for vitkd's models)."
        )
    if len(input_size) != 3 or input_size[0] != in_chans:
        raise ValueError(f"input_size must be (in_chans={in_chans}, H, W), got {tuple(input_size)}.")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != in_chans:
            raise ValueError(
                f"{name} needs one value per channel (in_chans={in_chans}), got {tuple(values)}."
            )
    if min(std) <= 0:
        raise ValueError(f"std values must be positive, got {tuple(std)}.")
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"label_names has {len(label_names)} names but num_classes={num_classes}.")
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")


def _drop_source_checkpoint_metadata(config_path: Path) -> None:
    """Remove from config.json the pretrained_cfg keys that describe timm's own released weights."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in _SOURCE_CHECKPOINT_KEYS:
        config["pretrained_cfg"].pop(key, None)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _check_timm_rebuilds(export_dir: Path) -> None:
    """Load the export through timm's ``local-dir:`` path (strict weight loading) or raise RuntimeError."""
    try:
        timm.create_model(f"local-dir:{export_dir}", pretrained=True)
    except Exception as err:
        config = json.loads((export_dir / "config.json").read_text(encoding="utf-8"))
        raise RuntimeError(
            f"timm cannot rebuild the student from its export (architecture={config['architecture']!r}, "
            f"model_args={config.get('model_args')}); check architecture/model_args: {err}"
        ) from err


def _swap_into_place(new_dir: Path, target: Path) -> None:
    """Rename ``new_dir`` to ``target``; an existing ``target`` is removed only after the rename succeeds.

    POSIX cannot rename a directory over a non-empty one, so the old export is first moved aside to a
    hidden sibling and restored if the second rename fails.
    """
    if not target.exists():
        new_dir.rename(target)
        return
    if not target.is_dir():
        raise NotADirectoryError(f"Export target {target} exists and is not a directory.")
    old_dir = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old_dir)
    try:
        new_dir.rename(target)
    except BaseException:
        old_dir.rename(target)
        raise
    shutil.rmtree(old_dir)
