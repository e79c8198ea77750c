"""The one home of exported students: what to record, writing the folder, reading it back, loading models.

An export is a timm Hub folder, ``model.safetensors`` + timm's ``config.json``: exactly what
``timm.create_model('local-dir:<dir>', pretrained=True)`` rebuilds, and, once pushed
(:mod:`vitkd.model_hub`), what ``timm.create_model('hf-hub:<owner>/<name>', pretrained=True)`` does.
Its ``pretrained_cfg`` carries the evaluation pipeline's data config (:attr:`vitkd.data.DataInfo.data_config`:
input size, mean/std, crop_pct, crop_mode, interpolation), which evaluation and the linear probe read
back (:func:`data_config_for`). Serialisation is timm's own ``save_for_hf``; this module adds argument
checks, the removal of metadata that describes timm's released weights rather than the student, a load
check, and an atomic swap.

    export_student(student, run_folder.student, recipe.student, info)   # what the trainer calls
    model = load_model("runs/quickstart/seed0/student")                  # frozen, eval mode
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from accelerate.utils import extract_model_from_parallel
from timm.data import resolve_model_data_config
from timm.models import save_for_hf, split_model_name_tag
from torch import nn

from vitkd.data import DataConfig, DataInfo
from vitkd.data.config import PRESETS
from vitkd.data.transforms import eval_crop
from vitkd.models import create_teacher, freeze
from vitkd.models.vit import VIT_EXPORT_ARCH
from vitkd.recipe import ModelConfig

__all__ = [
    "EXPORT_FILES",
    "data_config_for",
    "export_spec",
    "export_student",
    "is_export",
    "load_model",
    "read_export_config",
    "write_export",
]

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


# create_model's own parameters steer creation (weights, cfgs, layer flags) and are no architecture
# arguments; config.json keeps num_classes and the input channels in fields of their own.
_NOT_MODEL_ARGS = (set(inspect.signature(timm.create_model).parameters) - {"model_name", "kwargs"}) | {
    "num_classes",
    "in_chans",
}


def export_spec(model_name: str, **model_kwargs: Any) -> tuple[str, dict[str, Any]]:
    """``(architecture, model_args)`` to record for ``timm.create_model(model_name, **model_kwargs)``.

    ``timm.create_model(architecture, num_classes=..., in_chans=..., **model_args)`` rebuilds the same
    state dict and forward. vitkd's ViTs are recorded as timm's own ViT architecture plus their
    geometry, so that timm without vitkd loads them; every other model (timm's, the CIFAR zoo) keeps
    its name, without a pretrained tag, and its architecture kwargs. Kwargs that ``create_model``
    consumes itself (``pretrained``, ``pretrained_cfg``, ``checkpoint_path`` ...), ``num_classes``,
    ``in_chans`` and ``None`` values (which timm drops) are left out.

    Raises:
        ValueError: ``model_name`` is a hub / local-dir reference or not a registered timm model.
    """
    if ":" in model_name:
        raise ValueError(
            f"export_spec needs a registered architecture name, got the reference {model_name!r}: "
            "pass the 'architecture' and 'model_args' of its config.json instead"
        )
    architecture, _ = split_model_name_tag(model_name)
    if not timm.is_model(architecture):
        raise ValueError(
            f"unknown model {model_name!r}: timm has no such architecture "
            "(vitkd's models are registered by `import vitkd`)"
        )
    model_args = {k: v for k, v in model_kwargs.items() if k not in _NOT_MODEL_ARGS and v is not None}
    if architecture in VIT_EXPORT_ARCH:
        timm_architecture, geometry = VIT_EXPORT_ARCH[architecture]
        return timm_architecture, {**geometry, **model_args}
    return architecture, model_args


def export_student(model: nn.Module, out_dir: str | Path, student: ModelConfig, info: DataInfo) -> Path:
    """Export a trained student built from the recipe section ``student`` on the data ``info`` describes.

    The architecture and ``model_args`` come from :func:`export_spec`, the classes and the evaluation
    data config (input size, mean/std, crop_pct, crop_mode, interpolation) from ``info``. Call it on
    the main process only; see :func:`write_export` for the rest.
    """
    architecture, model_args = export_spec(student.name, **student.kwargs)
    return write_export(
        model, out_dir, architecture=architecture, model_args=model_args, num_classes=info.num_classes,
        label_names=info.class_names, data_config=info.data_config,
    )


def write_export(
    model: nn.Module,
    out_dir: str | Path,
    *,
    architecture: str,
    model_args: dict | None = None,
    num_classes: int,
    label_names: Sequence[str] | None = None,
    data_config: Mapping[str, Any],
) -> Path:
    """Write ``model``'s weights and timm config to ``out_dir``, replacing any previous export atomically.

    Args:
        model: a timm-built model (it carries ``pretrained_cfg``), possibly wrapped by DDP/DataParallel
            or ``torch.compile``; the wrappers are removed. The model itself is not modified.
        out_dir: the export folder. It is written as a temporary sibling and renamed into place only
            once complete and loadable, so a crash never leaves a half-written export.
        architecture: timm model name recorded in config.json (:func:`export_spec` gives it for
            vitkd's models); must be registered with timm.
        model_args: keyword arguments that, with ``architecture``, rebuild the same network
            (``timm.create_model(architecture, **model_args)``); timm adds those it recorded itself.
        num_classes: classifier outputs; must equal ``model.num_classes``.
        label_names: one name per class index, or None.
        data_config: the evaluation preprocessing in timm's keys: ``input_size`` (C, H, W) pixels,
            ``mean``/``std`` (C values each, of the [0, 1] input), ``crop_pct`` (1.0: no crop, as on
            CIFAR; 0.875 for the ImageNet Resize(256) + CenterCrop(224) protocol), ``crop_mode``
            (default ``center``) and ``interpolation`` (default ``bilinear``).

    Returns:
        ``out_dir`` as a Path, holding exactly ``model.safetensors`` and ``config.json``.
    """
    model = extract_model_from_parallel(model, keep_torch_compile=False)
    if any(not t.is_contiguous() for t in model.state_dict().values()):  # channels_last weights
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # safetensors stores NCHW
    data_config = {"crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear", **data_config}
    data_config = {**data_config, "input_size": tuple(data_config["input_size"]),
                   "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"])}
    _check_export_args(model, architecture=architecture, num_classes=num_classes, label_names=label_names,
                       **data_config)
    in_chans = data_config["input_size"][0]
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
            data_config=data_config,
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
    num_classes: int,
    label_names: Sequence[str] | None,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float,
    crop_mode: str,
    interpolation: str,
) -> None:
    """Raise a ValueError/TypeError naming the argument for inputs timm would export wrongly or not at all."""
    if not hasattr(model, "pretrained_cfg"):
        raise TypeError(
            f"export needs a timm model (built with timm.create_model), got {type(model).__name__} "
            "without a pretrained_cfg."
        )
    if not timm.is_model(architecture):
        raise ValueError(
            f"architecture={architecture!r} is not registered with timm, so the export could not be loaded; "
            "use a timm model name (vitkd.export.export_spec gives the right one for vitkd's models)."
        )
    if len(input_size) != 3:
        raise ValueError(f"data_config input_size must be (C, H, W), got {tuple(input_size)}.")
    in_chans = input_size[0]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != in_chans:
            raise ValueError(
                f"data_config {name} needs one value per channel (input_size C={in_chans}), got {tuple(values)}."
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


def read_export_config(export_dir: str | Path) -> dict:
    """timm's ``config.json`` of an export folder (architecture, num_classes, pretrained_cfg, ...)."""
    config_path = Path(export_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing; export the student with vitkd.export.export_student.")
    return json.loads(config_path.read_text(encoding="utf-8"))


def is_export(source: str | Path) -> bool:
    """Whether ``source`` is an export that records its own architecture and data config: a folder with
    ``config.json`` or a ``hf-hub:<org>/<repo>`` timm repository."""
    return str(source).startswith("hf-hub:") or (Path(source) / "config.json").is_file()


def load_model(
    source: str | Path, *, arch: str | None = None, num_classes: int | None = None, in_chans: int = 3
) -> nn.Module:
    """A frozen model in eval mode (:func:`vitkd.models.freeze`) to evaluate or probe.

    ``source`` is an export folder (``config.json`` + ``model.safetensors``, rebuilt by timm's
    ``local-dir:``), a ``hf-hub:<org>/<repo>`` timm repository, or a weights file / checkpoint folder
    of architecture ``arch`` with a ``num_classes`` head and ``in_chans`` input channels (loaded
    strictly by :func:`vitkd.models.load_weights`).
    """
    text = str(source)
    if text.startswith("hf-hub:"):
        return freeze(timm.create_model(text, pretrained=True))
    path = Path(text)
    if (path / "config.json").is_file():
        return freeze(timm.create_model(f"local-dir:{path}", pretrained=True))
    if not path.exists():
        raise FileNotFoundError(
            f"model {text!r} is neither an export folder (with config.json), a weights file / checkpoint "
            "folder nor hf-hub:<org>/<repo>"
        )
    if arch is None or num_classes is None:
        raise ValueError(
            f"{text} is a bare checkpoint (no config.json): give its architecture and head size too "
            "(on the command line --arch, or --recipe whose student it is, and the dataset's classes)"
        )
    return create_teacher(arch, num_classes=num_classes, in_chans=in_chans, checkpoint=path)


def data_config_for(model: nn.Module, source: str, **overrides: Any) -> DataConfig:
    """The evaluation data section for ``model`` on ``source``, from the model's own ``pretrained_cfg``.

    Input size, channels and mean/std are the model's; the transform preset is the one whose evaluation
    pipeline has the model's crop_pct, crop_mode and interpolation (:func:`vitkd.data.transforms.eval_crop`),
    so an export is evaluated and probed with the protocol it was evaluated with in training.
    ``overrides`` set or replace :class:`~vitkd.data.DataConfig` fields (``eval_split``, ``num_workers`` ...).

    Raises:
        ValueError: no preset evaluates with the model's crop_pct / crop_mode / interpolation.
    """
    cfg = resolve_model_data_config(model)
    in_chans, height, width = cfg["input_size"]
    if height != width:
        raise ValueError(f"the model's input size {cfg['input_size']} is not square; vitkd's loaders make square images")
    fields = dict(source=source, image_size=height, in_chans=in_chans, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    wanted = (float(cfg.get("crop_pct", 1.0)), cfg.get("crop_mode", "center"), cfg.get("interpolation", "bilinear"))
    for preset in PRESETS:
        if eval_crop(DataConfig(**fields, transform=preset)) == wanted:
            return dataclasses.replace(DataConfig(**fields, transform=preset), **overrides)
    raise ValueError(
        f"the model's pretrained_cfg evaluates with crop_pct={wanted[0]}, crop_mode={wanted[1]!r}, "
        f"interpolation={wanted[2]!r}, which no data.transform preset reproduces "
        f"({ {p: eval_crop(DataConfig(**fields, transform=p)) for p in PRESETS} }); evaluate it with a recipe "
        "whose data section you choose (--recipe)"
    )
