"""Preflight: every problem that would stop or spoil a run, found in seconds before any image is read.

:func:`preflight` returns them all at once (not only the first) as messages that name the recipe key
and the fix; :func:`check_runnable` raises one :class:`PreflightError` listing them. Checked:

* models: the timm name (with a did-you-mean from ``timm.list_models()``, vitkd's models included),
  the constructor ``kwargs`` and the data's image shape (by building the model on the ``meta`` device,
  which allocates nothing, and running a forward pass there);
* weights: local checkpoint files exist and fit the model (keys and shapes); timm / ``hf-hub:`` weights
  are in the local Hugging Face cache or can be downloaded, with the commands to fetch them otherwise;
* data: the source resolves (:func:`vitkd.data.sources.open_config_source`: a builtin, a local dataset, or a
  Hub dataset listed online or cached for offline use), its splits not yet read;
* ``hub.push``: a Hugging Face token is configured.

Problems of the kind only training reveals (divergence, accuracy) are out of scope.
"""

from __future__ import annotations

import difflib
import functools
import glob
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from vitkd.data.builtin import BUILTINS
from vitkd.data.config import DataConfig
from vitkd.data.hub_datasets import cached_hub_snapshot, why_offline
from vitkd.data.sources import open_config_source
from vitkd.models.teacher import HEAD_ADVICE, HUB_PREFIX, TIMM_PRETRAINED, classifier_keys, teacher_input_spec
from vitkd.models.weights import FOLDER_WEIGHT_FILES, CheckpointMismatchError, load_weights
from vitkd.recipe import ModelConfig, Recipe, RecipeError

__all__ = [
    "ModelCheck",
    "PreflightError",
    "PreflightReport",
    "check_runnable",
    "inspect_recipe",
    "preflight",
    "source_opens_offline",
]

logger = logging.getLogger(__name__)

# timm's weight files on the Hub, in the order timm tries them (safetensors first).
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class PreflightError(RecipeError):
    """A recipe that cannot run as it stands; ``problems`` lists every reason, each with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) found before any data was read:\n{listing}")


@dataclass
class ModelCheck:
    """What preflight learnt about one model: ``role`` is the recipe key (``student``, ``teacher[1]``)."""

    role: str
    name: str
    weights: str  # where its weights come from, in words
    params: int | None = None  # parameter count (None when the model could not be built)
    num_classes: int | None = None  # head size it was built with (None: timm's default, data unknown)


@dataclass
class PreflightReport:
    """Everything :func:`inspect_recipe` found; ``problems`` stop or spoil the run, ``notes`` do not."""

    models: list[ModelCheck] = field(default_factory=list)
    data_source: str = ""  # how the data source was resolved, in words
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def preflight(recipe: Recipe) -> list[str]:
    """Every problem that would stop or spoil ``recipe``'s run (empty when none); reads no image."""
    return inspect_recipe(recipe).problems


def check_runnable(recipe: Recipe) -> None:
    """Raise :class:`PreflightError` listing every problem of ``recipe``; log its notes (e.g. random teacher)."""
    report = inspect_recipe(recipe)
    for note in report.notes:
        logger.warning(note)
    if report.problems:
        raise PreflightError(report.problems)


def inspect_recipe(recipe: Recipe, num_classes: int | None = None) -> PreflightReport:
    """Check ``recipe`` (see the module docstring). ``num_classes``: the data's class count when known
    (then heads are checked too); without it models get timm's default head and head sizes are not compared."""
    report = PreflightReport()
    hub = _HubAccess()
    report.data_source = _check_data(recipe.data, report)
    roles = [("student", recipe.student)]
    roles += [(f"teacher[{i}]" if len(recipe.teachers) > 1 else "teacher", t) for i, t in enumerate(recipe.teachers)]
    for role, cfg in roles:
        check = _check_model(role, cfg, recipe.data, num_classes, hub, report)
        if check is not None:
            report.models.append(check)
    if recipe.hub.push:
        _check_push(recipe, hub, report)
    return report


class _HubAccess:
    """Whether the Hugging Face Hub can be used now, asked at most once per preflight (one short probe)."""

    @functools.cached_property
    def reason_offline(self) -> str | None:
        return why_offline()

    @property
    def online(self) -> bool:
        return self.reason_offline is None

    def why_offline(self) -> str:
        return self.reason_offline or "the Hub is reachable"


# ----------------------------------------------------------------------------- models


def _check_model(
    role: str, cfg: ModelConfig, data: DataConfig, num_classes: int | None, hub: _HubAccess, report: PreflightReport
) -> ModelCheck | None:
    base, _tag = split_model_name_tag(cfg.name)
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        family = re.split(r"[_\d]", base)[0] or base
        report.problems.append(f"{role}.name: {cfg.name!r} is not a timm model (vitkd's models included).{hint} "
                               f"`python -c \"import timm, vitkd; print(timm.list_models('{family}*'))\"` lists names")
        return None
    check = ModelCheck(role, cfg.name, _weights_source(cfg), num_classes=num_classes)
    model = _build_on_meta(role, cfg, data, num_classes, report)
    if model is not None:
        check.params = sum(p.numel() for p in model.parameters())
    if cfg.checkpoint is None:
        if role.startswith("teacher"):
            report.notes.append(f"{role} {cfg.name!r} has no checkpoint: its weights are random (smoke tests only)")
    elif cfg.checkpoint == TIMM_PRETRAINED:
        _check_timm_weights(role, cfg, num_classes, hub, report)
    elif str(cfg.checkpoint).startswith(HUB_PREFIX):
        _check_hub_model(role, cfg, hub, report)
    else:
        _check_local_weights(role, cfg, model, num_classes, report)
    return check


def _weights_source(cfg: ModelConfig) -> str:
    if cfg.checkpoint is None:
        return "random initialisation"
    head = ", new head for the data's classes (reset_head)" if cfg.reset_head else ""
    if cfg.checkpoint == TIMM_PRETRAINED:
        pretrained = get_pretrained_cfg(cfg.name)
        where = pretrained.hf_hub_id or pretrained.url if pretrained is not None else None
        return f"timm pretrained ({where or 'none known'}){head}"
    return f"{cfg.checkpoint}{head}"


def _build_on_meta(
    role: str, cfg: ModelConfig, data: DataConfig, num_classes: int | None, report: PreflightReport
) -> nn.Module | None:
    """``cfg``'s model on the meta device (no memory, no weights), fed a [2, C, S, S] meta batch.

    Catches wrong constructor kwargs and images the model cannot take (channels, a ViT's fixed size).
    A teacher whose weights record an input size is fed that size (the batch is resized for it).
    """
    if "pretrained" in cfg.kwargs:
        report.problems.append(f"{role}.kwargs: remove 'pretrained'; use {role}.checkpoint: timm for timm's weights")
        return None
    head = {} if num_classes is None else {"num_classes": num_classes}
    try:
        with torch.device("meta"):
            model = timm.create_model(split_model_name_tag(cfg.name)[0], in_chans=data.in_chans, **head, **cfg.kwargs)
    except Exception as err:  # a constructor rejects bad kwargs with TypeError, ValueError, AssertionError...
        report.problems.append(f"{role}.kwargs {cfg.kwargs}: timm.create_model({cfg.name!r}) failed: {err}")
        return None
    size = data.effective_image_size
    if role.startswith("teacher"):  # fed at the size its weights record (adapt_teacher resizes the batch)
        spec = teacher_input_spec(model, cfg.checkpoint, data.in_chans)
        size = spec.image_size if spec is not None else size
    try:
        with torch.no_grad():
            model.eval()(torch.empty(2, data.in_chans, size, size, device="meta"))
    except NotImplementedError:
        pass  # an operation without a meta kernel: the shapes cannot be checked this way, not a problem
    except Exception as err:
        report.problems.append(
            f"{role} {cfg.name!r} cannot take {data.in_chans}x{size}x{size} images (data.in_chans, "
            f"data.image_size): {str(err).rstrip('.')}. For a ViT, set {role}.kwargs.img_size: {size}, or change data.image_size"
        )
    return model


def _check_timm_weights(
    role: str, cfg: ModelConfig, num_classes: int | None, hub: _HubAccess, report: PreflightReport
) -> None:
    pretrained = get_pretrained_cfg(cfg.name)
    if pretrained is None or not pretrained.has_weights:
        tags = timm.list_pretrained(f"{split_model_name_tag(cfg.name)[0]}.*")
        found = f"; tagged names with weights: {', '.join(tags[:6])}" if tags else ""
        report.problems.append(f"{role}.checkpoint is 'timm' but timm has no pretrained weights for {cfg.name!r}"
                               f"{found}. Or point {role}.checkpoint at a local file/export folder")
        return
    _check_head(role, cfg, pretrained.num_classes, num_classes, report)
    local_file = cfg.kwargs.get("pretrained_cfg_overlay", {}).get("file")  # timm's own "weights from this file"
    if local_file is not None:
        if not Path(local_file).is_file():
            report.problems.append(f"{role}.kwargs.pretrained_cfg_overlay.file: {local_file!r} does not exist")
    elif pretrained.hf_hub_id:
        filenames = (pretrained.hf_hub_filename,) if pretrained.hf_hub_filename else HUB_WEIGHT_FILES
        if not _in_hub_cache(pretrained.hf_hub_id, filenames) and not hub.online:
            report.problems.append(_fetch_message(role, cfg.name, pretrained.hf_hub_id, hub))
    elif pretrained.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained.url).name
        if not cached.is_file() and not hub.online:
            report.problems.append(
                f"{role}.checkpoint 'timm': the weights of {cfg.name!r} are not cached at {cached} and "
                f"{hub.why_offline()}. Download {pretrained.url} on a connected machine into that folder "
                f"(torch.hub.get_dir(), $TORCH_HOME), or set {role}.checkpoint to the file")


def _check_hub_model(role: str, cfg: ModelConfig, hub: _HubAccess, report: PreflightReport) -> None:
    repo_id = str(cfg.checkpoint)[len(HUB_PREFIX):]
    cached = _in_hub_cache(repo_id, ("config.json",)) and _in_hub_cache(repo_id, HUB_WEIGHT_FILES)
    if not cached and not hub.online:
        report.problems.append(_fetch_message(role, cfg.name, repo_id, hub))


def _check_head(
    role: str, cfg: ModelConfig, pretrained_classes: int, num_classes: int | None, report: PreflightReport
) -> None:
    if num_classes is None or pretrained_classes == num_classes or cfg.reset_head:
        return
    report.problems.append(f"{role}: the weights of {cfg.name!r} have a {pretrained_classes}-class head but the "
                           f"data has {num_classes} classes. {HEAD_ADVICE}")


def _in_hub_cache(repo_id: str, filenames: tuple[str, ...]) -> bool:
    """Whether one of ``filenames`` of model repo ``repo_id`` (``org/name[@revision]``) is in the local HF cache."""
    repo, _, revision = repo_id.partition("@")
    return any(
        isinstance(huggingface_hub.try_to_load_from_cache(repo, name, revision=revision or None), str)
        for name in filenames
    )


def _fetch_message(role: str, name: str, repo_id: str, hub: _HubAccess) -> str:
    return (
        f"{role}.checkpoint: the weights of {name!r} (Hub repo {repo_id}) are not in the local Hugging Face cache "
        f"({huggingface_hub.constants.HF_HUB_CACHE}) and {hub.why_offline()}. On a machine with internet run "
        f"`hf download {repo_id}` (older clients: `huggingface-cli download {repo_id}`), then copy its "
        "hub cache folder to this machine's $HF_HOME/hub (or point HF_HOME / HF_HUB_CACHE at the copy); or set "
        f"{role}.checkpoint to a local .safetensors/.pth file or export folder"
    )


def _check_local_weights(
    role: str, cfg: ModelConfig, model: nn.Module | None, num_classes: int | None, report: PreflightReport
) -> None:
    path = Path(cfg.checkpoint)
    if not path.exists():
        report.problems.append(f"{role}.checkpoint: {str(path)!r} does not exist (relative paths start at the "
                               f"working directory, {Path.cwd()})")
        return
    if path.is_dir() and not any((path / f).is_file() for f in FOLDER_WEIGHT_FILES):
        report.problems.append(f"{role}.checkpoint: folder {str(path)!r} holds neither "
                               f"{' nor '.join(FOLDER_WEIGHT_FILES)}")
        return
    if model is None:
        return
    # with an unknown class count the head cannot be compared; with reset_head it is not loaded
    heads = classifier_keys(model) if num_classes is None or cfg.reset_head else ()
    try:
        with warnings.catch_warnings():  # loading into meta tensors is a shape check, and torch says it is a no-op
            warnings.simplefilter("ignore", UserWarning)
            load_weights(model, path, ignore=[*cfg.ignore, *(f"{h}.*" for h in heads)])
    except CheckpointMismatchError as err:
        advice = "" if cfg.reset_head else f"\n  if the heads differ: {HEAD_ADVICE}"
        report.problems.append(f"{role}.checkpoint: {err}{advice}")
    except (OSError, ValueError) as err:
        report.problems.append(f"{role}.checkpoint: {err}")


# ----------------------------------------------------------------------------- data and Hub


def source_opens_offline(cfg: DataConfig) -> bool:
    """Whether ``cfg``'s splits can be read without downloading: a builtin, an existing local path, or a Hub
    dataset with a snapshot in the local Hub cache (read offline, as :mod:`vitkd.data.hub_datasets` does)."""
    path = Path(cfg.source).expanduser()
    if cfg.source in BUILTINS or path.exists() or (glob.has_magic(cfg.source) and glob.glob(str(path))):
        return True
    try:
        cached_hub_snapshot(cfg.source, cfg.revision, reason="")
    except (OSError, ValueError):  # not cached, or not a Hub id at all
        return False
    return True


def _check_data(cfg: DataConfig, report: PreflightReport) -> str:
    """Whether ``cfg.source`` resolves, through the data package's own :func:`open_config_source`: it lists
    the splits (a Hub dataset's files online, its cached snapshot offline) and reads none of them."""
    try:
        src = open_config_source(cfg)
    except (OSError, ValueError) as err:  # DatasetUnavailableError is an OSError; its message says how to fetch
        report.problems.append(f"data.source: {err}")
        return cfg.source
    return f"{cfg.source} (splits: {', '.join(src.split_names)})"


def _check_push(recipe: Recipe, hub: _HubAccess, report: PreflightReport) -> None:
    if huggingface_hub.get_token() is None:
        report.problems.append(f"hub.push is true but no Hugging Face token is configured, so the upload to "
                               f"{recipe.hub.repo_id} would fail after training: run `hf auth login` or set HF_TOKEN, "
                               "or set hub.push: false and push later with scripts/push_to_hub.py")
    elif not hub.online:
        report.problems.append(f"hub.push is true but {hub.why_offline()}: the upload would fail after training. "
                               "Set hub.push: false and push later from a connected machine with scripts/push_to_hub.py")
