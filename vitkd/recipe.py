"""Recipes: one YAML file describes a whole distillation run, validated before anything is built.

A recipe has the sections ``data``, ``teacher``, ``student``, ``distill``, ``optim``, ``schedule``,
``mixup``, ``train``, ``paper`` and ``hub`` (see the dataclasses below for every key and its default). A recipe
may ``extends:`` another (a path relative to itself); the child states only what differs, mappings
merge key by key, everything else is replaced. ``--set a.b=value`` overrides are parsed as YAML
scalars and type-checked against the schema like the file itself.

Why a hand-written converter instead of OmegaConf structured configs: the teacher may be one model
*or* a list (an ensemble), which OmegaConf's unions do not support, and we want every unknown key
to come back with the closest valid spelling.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import yaml

from vitkd.data.config import DataConfig
from vitkd.losses import available_losses, build_loss
from vitkd.models.traits import model_traits

__all__ = [
    "DistillConfig",
    "HubConfig",
    "MixupConfig",
    "ModelConfig",
    "ModelEmaConfig",
    "OptimConfig",
    "PaperConfig",
    "Recipe",
    "RecipeError",
    "ScheduleConfig",
    "TeacherCacheConfig",
    "TrainConfig",
    "load_recipe",
    "validate_precision",
    "recipe_from_dict",
    "recipe_to_dict",
]

MIXED_PRECISION = ("no", "fp16", "bf16")
REPORT = ("best", "last", "ema")
HEADS = ("cls", "split")
MIXUP_MODES = ("batch", "pair", "elem")  # timm.data.Mixup: one lambda per batch, per pair, per sample


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and how to fix it."""


@dataclass
class TeacherCacheConfig:
    """Stored teacher logits to train from instead of running the teacher (``scripts/cache_teacher.py``).

    ``dir``: the cache folder (``teacher: {cache: DIR}`` or ``--set teacher.cache=DIR`` is shorthand for
    ``{dir: DIR}``). ``reuse_epochs``: a run longer than the cached epochs reads cached epoch
    ``e mod N`` for its epoch ``e`` (the same augmented views and logits again); otherwise it is refused.
    """

    shorthand: ClassVar[str] = "dir"

    dir: str
    reuse_epochs: bool = False


@dataclass
class ModelConfig:
    """A model by timm name (vitkd's own names work after ``import vitkd``).

    ``checkpoint``: a local ``.safetensors``/``.pth`` file or timm export folder, or ``hf-hub:…`` /
    ``timm`` to take timm's pretrained weights. ``kwargs`` go to ``timm.create_model`` (e.g.
    ``drop_path_rate``, ``img_size``). ``ignore``: key patterns left out of the checkpoint check.
    ``reset_head: true`` (students only) loads everything but the classifier from ``checkpoint`` and
    starts a new head for the dataset's classes: fine-tuning a pretrained model to your classes, e.g.
    to make a teacher for them (README, "Fine-tune the teacher, then distil"). ``cache`` (teacher
    only): see :class:`TeacherCacheConfig`.
    """

    shorthand: ClassVar[str] = "name"

    name: str
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    reset_head: bool = False
    cache: TeacherCacheConfig | None = None


@dataclass
class DistillConfig:
    """What the student learns from.

    ``method``: a name from ``vitkd.losses.available_losses()`` or ``none`` (plain supervised training,
    e.g. for teachers). ``kwargs`` go to the loss. Total loss =
    ``ce_weight · CE + min(epoch / warmup_epochs, 1) · kd_weight · L_method`` with 1-based epochs
    (warmup 0 or 1: no ramp). ``heads``: ``cls`` for one-head students; ``split`` for two-head
    (DeiT-distilled) students with a teacher: CE on the class head, distillation on the distillation
    head (DeiT's convention). A two-head student with ``method: none`` keeps ``cls`` and learns the
    labels with both heads; with a teacher it must use ``split`` (evaluation averages both heads, so
    both must be trained).
    """

    method: str = "luminet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    warmup_epochs: int = 0
    heads: str = "cls"


@dataclass
class OptimConfig:
    """Arguments of ``timm.optim.create_optimizer_v2``.

    ``filter_bias_and_bn: false`` applies weight decay to every parameter, as the CIFAR papers' code
    does (timm's default exempts biases and norm weights). ``layer_decay``: timm's layer-wise lr decay
    (lr × layer_decay^(depth below the top), e.g. 0.65 for ViT fine-tuning); needs a model with layer
    groups (timm's ``group_matcher``: timm's ViTs/ConvNets, not the CIFAR zoo).
    """

    opt: str = "momentum"  # plain momentum SGD as the papers' code; timm's "sgd" is Nesterov SGD
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    filter_bias_and_bn: bool = False
    layer_decay: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """Arguments of ``timm.scheduler.create_scheduler_v2`` (epochs come from ``train.epochs``)."""

    sched: str = "multistep"
    # timm decays FROM the 1-based epoch a milestone names: [151, 181, 211] is the papers' "after 150/180/210"
    decay_milestones: list[int] = field(default_factory=lambda: [151, 181, 211])
    decay_rate: float = 0.1
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    step_on_epochs: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixupConfig:
    """timm's Mixup/CutMix (``timm.data.Mixup``) on every training batch; off while both alphas are 0.

    The mixed images go to student and teacher alike; cross-entropy uses the mixed soft targets
    (timm's ``SoftTargetCrossEntropy``) and distillation the logits of the mixed images, as DeiT
    trains. ``prob``: chance a batch is mixed at all; ``switch_prob``: chance of CutMix instead of
    Mixup when both are on; ``mode``: one lambda per ``batch``, per ``pair`` or per ``elem`` (sample);
    ``label_smoothing``: smoothing of the mixed targets (use it instead of ``train.label_smoothing``).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


@dataclass
class ModelEmaConfig:
    """An exponential moving average of the student's weights (timm's ``ModelEmaV3``), updated after
    every optimiser step, evaluated at every evaluation and exported as ``student_ema/``.

    ``decay``: weight of the old average per update (DeiT: 0.99996). ``warmup``: timm's decay warm-up
    (``use_warmup``), so early averages follow the fast-moving weights.
    """

    decay: float = 0.9998
    warmup: bool = False


@dataclass
class TrainConfig:
    """The loop. ``batch_size`` is per device: the global batch is ``batch_size · processes · grad_accum_steps``.

    ``gpus`` records the process count the recipe was written for (a different count warns, since
    batch statistics and the global batch change). ``max_steps`` stops early after that many
    optimiser steps (smoke runs, benchmarks). ``report`` says which metrics are *the* result: the
    best or last evaluation, or the EMA student's last (``ema``, needs ``model_ema``).
    ``output_dir`` may use ``{name}`` and ``{seed}``. ``mixed_precision`` (``no``/``fp16``/``bf16``) applies
    only when no launcher set one: ``accelerate launch`` and ``accelerate config`` take precedence.
    ``label_smoothing``: of the cross-entropy on hard labels (under Mixup use ``mixup.label_smoothing``).
    ``channels_last``: student and teacher weights and the images in NHWC memory format; ``compile``: ``torch.compile``
    the student (Accelerate's ``dynamo_backend`` inductor); ``grad_checkpointing``: recompute
    activations in backward (timm's ``set_grad_checkpointing``) to trade compute for memory.
    """

    epochs: int = 240
    max_steps: int | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    grad_accum_steps: int = 1
    clip_grad: float | None = None
    mixed_precision: str | None = None
    eval_every: int = 1
    checkpoint_every: int = 1
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int = 2
    log_every: int = 20
    seed: int = 0
    output_dir: str = "runs/{name}/seed{seed}"
    report: str = "best"
    gpus: int = 1
    log_with: list[str] = field(default_factory=list)
    cpu: bool = False
    label_smoothing: float = 0.0
    model_ema: ModelEmaConfig | None = None
    channels_last: bool = False
    compile: bool = False
    grad_checkpointing: bool = False


@dataclass
class PaperConfig:
    """Where the recipe comes from: the paper table/row and the number it targets (top-1, %)."""

    table: str | None = None
    row: str | None = None
    published_top1: float | None = None
    notes: str | None = None


@dataclass
class HubConfig:
    """Push the exported student to the Hugging Face Hub at the end of training (main process only).

    ``license``: the Hub licence id written into the model card (e.g. ``mit``, ``cc-by-nc-4.0``: the
    weights may inherit the terms of the teacher's or the dataset's licence).
    """

    repo_id: str | None = None
    push: bool = False
    private: bool = False
    revision: str | None = None
    license: str = "apache-2.0"


@dataclass
class Recipe:
    name: str
    data: DataConfig
    student: ModelConfig
    teacher: ModelConfig | list[ModelConfig] | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    @property
    def teachers(self) -> list[ModelConfig]:
        """The teacher(s) as a list (empty for ``method: none``)."""
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]

    def run_dir(self) -> Path:
        return Path(self.train.output_dir.format(name=self.name, seed=self.train.seed))


# ----------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe (resolving ``extends``), apply ``--set key=value`` overrides, validate."""
    path = Path(path)
    raw = _read_with_extends(path, chain=())
    raw.setdefault("name", path.stem)
    for item in overrides:
        _apply_override(raw, item)
    return recipe_from_dict(raw)


def recipe_from_dict(raw: Mapping[str, Any]) -> Recipe:
    """Build and validate a :class:`Recipe` from a plain mapping (what YAML gives)."""
    recipe = _convert(Recipe, raw, "recipe")
    _validate(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain YAML-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(recipe))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise RecipeError(f"'extends' cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise RecipeError(f"recipe file not found: {path}{where}")
    try:
        with path.open() as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:  # e.g. an unquoted `{seed}` inside a flow mapping `{...}`
        raise RecipeError(f"{path} is not valid YAML (quote values that contain braces or colons): {err}") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = _read_with_extends(path.parent / parent, (*chain, path))
    base.pop("name", None)  # the name is the child's (its file stem unless it says otherwise)
    return _deep_merge(base, raw)


def _deep_merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value``; the value is parsed as YAML (so ``1e-3``, ``[1, 2]``, ``null`` work)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set expects key=value (e.g. train.epochs=10), got {item!r}")
    *parents, leaf = key.strip().split(".")
    node: Any = raw
    cls: Any = Recipe
    for depth, part in enumerate(parents):
        cls = _field_type(cls, part, ".".join(parents[: depth + 1]))
        if isinstance(node.get(part), str) and getattr(cls, "shorthand", None):  # `student: name` -> mapping
            node[part] = {cls.shorthand: node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: '{'.'.join(parents[: depth + 1])}' is not a section")
    if cls is not None and dataclasses.is_dataclass(cls):
        _field_type(cls, leaf, key)  # unknown key -> error with suggestion
    node[leaf] = yaml.safe_load(text)


def _field_type(cls: Any, name: str, dotted: str) -> Any:
    """The dataclass type of section ``name`` within ``cls`` (None below free-form mappings)."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise RecipeError(_unknown_key_message(dotted, name, fields))
    hint = typing.get_type_hints(cls)[name]
    options = [a for a in _union_args(hint) if dataclasses.is_dataclass(a)]
    return options[0] if options else None


# ----------------------------------------------------------------------------- typed conversion


def _unknown_key_message(where: str, key: str, valid: Mapping[str, Any] | Sequence[str]) -> str:
    names = sorted(valid)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{where}'.{hint} Valid keys here: {', '.join(names)}"


def _union_args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint`` and build dataclasses; ``where`` names the key."""
    if hint is Any:
        return value
    options = _union_args(hint)
    if len(options) > 1:
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where}: no accepted form fits: " + "; ".join(errors))
    if dataclasses.is_dataclass(hint):
        return _convert_dataclass(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(hint, value, where)


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML reads "5e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _convert_dataclass(cls: Any, value: Any, where: str) -> Any:
    if isinstance(value, str) and getattr(cls, "shorthand", None):
        value = {cls.shorthand: value}  # shorthand: `student: cifar_resnet8x4`, `cache: DIR`
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where}: expected a mapping with keys {[f.name for f in dataclasses.fields(cls)]}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise RecipeError(_unknown_key_message(f"{where}.{key}", key, fields))
    missing = [n for n, f in fields.items() if n not in value and _is_required(f)]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {missing}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # the section's own __post_init__ checks (e.g. DataConfig)
        raise RecipeError(f"{where}: {err}") from err


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# ----------------------------------------------------------------------------- cross-field checks


def _validate(recipe: Recipe) -> None:
    """Impossible combinations, caught before any model or dataset is touched."""
    if recipe.train.mixed_precision is not None:
        _check_choice("train.mixed_precision", recipe.train.mixed_precision, MIXED_PRECISION)
    _check_choice("train.report", recipe.train.report, REPORT)
    _check_choice("distill.heads", recipe.distill.heads, HEADS)
    for key in ("epochs", "batch_size", "grad_accum_steps", "eval_every", "keep_checkpoints", "log_every", "gpus"):
        if getattr(recipe.train, key) < 1:
            raise RecipeError(f"train.{key} must be >= 1, got {getattr(recipe.train, key)}")
    for key in ("max_steps", "checkpoint_every_steps"):
        value = getattr(recipe.train, key)
        if value is not None and value < 1:
            raise RecipeError(f"train.{key} must be >= 1 or null, got {value}")
    if recipe.train.checkpoint_every < 0:
        raise RecipeError("train.checkpoint_every must be >= 0 (0 = only at the end)")
    if recipe.distill.warmup_epochs < 0:
        raise RecipeError("distill.warmup_epochs must be >= 0")
    if recipe.student.reset_head and recipe.student.checkpoint is None:
        raise RecipeError("student.reset_head is true but student.checkpoint is empty: a new head only makes sense "
                          "on pretrained weights (checkpoint: timm, hf-hub:<org>/<repo> or a file); remove reset_head")
    _validate_numbers(recipe)
    if recipe.student.cache is not None:
        raise RecipeError("student.cache is set, but a cache holds teacher logits: move it to teacher.cache")
    if len(recipe.teachers) > 1 and any(t.cache for t in recipe.teachers):
        raise RecipeError("teacher.cache is set on an ensemble member: caches of ensembles are not supported yet; "
                          "remove 'cache' or use one teacher")
    for teacher in recipe.teachers:
        if teacher.reset_head:
            raise RecipeError(f"teacher {teacher.name!r} has reset_head: true, but a teacher's head makes the soft "
                              "labels and must be trained: fine-tune it first (a recipe with student: {name: "
                              f"{teacher.name}, checkpoint: ..., reset_head: true}} and distill.method: none), then "
                              "set teacher.checkpoint to that run's student/ export")
        if teacher.ignore:
            raise RecipeError(f"teacher {teacher.name!r} has 'ignore' {teacher.ignore}: a teacher's checkpoint must "
                              "match it completely (its head makes the soft labels); remove 'ignore'")
    _validate_method(recipe)
    _validate_student(recipe)
    _validate_regularisation(recipe)
    if recipe.data.streaming and any(t.cache for t in recipe.teachers):
        raise RecipeError("teacher.cache with data.streaming: a cache stores logits per dataset row, and a streamed "
                          "split has no fixed rows; remove teacher.cache or set data.streaming: false")
    if recipe.hub.push and not recipe.hub.repo_id:
        raise RecipeError("hub.push is true but hub.repo_id is empty: set hub.repo_id: owner/name")


def _validate_numbers(recipe: Recipe) -> None:
    """Sign, finiteness and range of every numeric key the schema's types cannot express."""
    o, s, d, t = recipe.optim, recipe.schedule, recipe.distill, recipe.train
    _check_number("optim.lr", o.lr, low=0.0, low_open=True, fix="e.g. 0.05 for SGD on CIFAR")
    _check_number("optim.weight_decay", o.weight_decay, low=0.0, fix="0 disables weight decay")
    _check_number("optim.momentum", o.momentum, low=0.0, high=1.0, high_open=True)
    _check_number("schedule.decay_rate", s.decay_rate, low=0.0, low_open=True, high=1.0,
                  fix="the factor the lr is multiplied by at each milestone, e.g. 0.1")
    _check_number("schedule.warmup_epochs", s.warmup_epochs, low=0)
    _check_number("schedule.warmup_lr", s.warmup_lr, low=0.0)
    _check_number("schedule.min_lr", s.min_lr, low=0.0, high=o.lr, fix=f"at most optim.lr ({o.lr})")
    if any(not 0 < m for m in s.decay_milestones) or list(s.decay_milestones) != sorted(set(s.decay_milestones)):
        raise RecipeError(f"schedule.decay_milestones must be increasing epochs >= 1, got {s.decay_milestones}")
    _check_number("distill.ce_weight", d.ce_weight, low=0.0)
    _check_number("distill.kd_weight", d.kd_weight, low=0.0)
    if d.ce_weight == 0 and (d.kd_weight == 0 or d.method == "none"):
        raise RecipeError("distill.ce_weight and the distillation term are both 0: the loss would be constant; "
                          "set distill.ce_weight > 0 (or distill.kd_weight > 0 with a method)")
    if t.clip_grad is not None:
        _check_number("train.clip_grad", t.clip_grad, low=0.0, low_open=True,
                      fix="the maximum gradient norm, e.g. 1.0, or null to disable clipping")
    if t.eval_batch_size is not None and t.eval_batch_size < 1:
        raise RecipeError(f"train.eval_batch_size must be >= 1 or null, got {t.eval_batch_size}")
    _check_number("train.seed", t.seed, low=0, high=2**32 - 1)
    for key in ("mean", "std"):
        values = getattr(recipe.data, key)
        if values is not None and not all(math.isfinite(v) for v in values):
            raise RecipeError(f"data.{key} must be finite numbers, got {list(values)}")
    if recipe.paper.published_top1 is not None:
        _check_number("paper.published_top1", recipe.paper.published_top1, low=0.0, high=100.0, fix="a top-1 in %")


def _check_number(key: str, value: float, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False, fix: str = "") -> None:
    """Raise RecipeError unless ``value`` is finite and within [low, high] (or open ends)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if math.isfinite(value) and not too_low and not too_high:
        return
    lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    allowed = f"{lo or '(-inf, '}{hi or 'inf)'}"
    raise RecipeError(f"{key} must be a finite number in {allowed}, got {value!r}" + (f" ({fix})" if fix else ""))


def validate_precision(mixed_precision: str | None, device_type: str) -> None:
    """Refuse a precision the device cannot run: call with the run's effective precision (recipe or
    launcher) and device type, before training. fp16 needs a GPU: on CPU Accelerate reports fp16 and
    silently trains in float32.
    """
    if mixed_precision == "fp16" and device_type == "cpu":
        raise RecipeError("mixed precision 'fp16' (train.mixed_precision or the launcher's --mixed_precision) on the "
                          "CPU: fp16 autocast is not available there and Accelerate would train in float32. Use bf16 "
                          "or 'no' on CPU (--set train.mixed_precision=bf16), or run on a GPU")


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"{key}: {value!r} is not one of {list(choices)}.{hint}")


def _validate_method(recipe: Recipe) -> None:
    method = recipe.distill.method
    if method == "none":
        if recipe.teachers:
            raise RecipeError("distill.method is 'none' but a teacher is given: remove 'teacher' or pick a method")
        return
    _check_choice("distill.method", method, [*available_losses(), "none"])
    if not recipe.teachers:
        raise RecipeError(f"distill.method '{method}' needs a teacher: add a 'teacher:' section")
    try:
        cls = type(build_loss(method, **recipe.distill.kwargs))
    except (TypeError, ValueError) as err:
        raise RecipeError(f"distill.kwargs: {err}") from err
    if cls.num_views == 2 and not recipe.data.two_view:
        raise RecipeError(f"distill.method '{method}' trains on two views: set data.two_view: true")
    if cls.num_views == 1 and recipe.data.two_view:
        raise RecipeError(f"data.two_view is true but '{method}' uses one view: set data.two_view: false")
    if cls.uses_batch_statistics and recipe.train.batch_size < 2:
        raise RecipeError(
            f"train.batch_size is {recipe.train.batch_size}, but '{method}' uses per-class statistics over "
            "the batch and needs at least 2 samples per device (the paper uses 64)"
        )


def _validate_student(recipe: Recipe) -> None:
    """Heads and training options against what the student can do (a weightless build, see model_traits)."""
    student, distill = recipe.student, recipe.distill
    try:
        traits = model_traits(student.name, **student.kwargs)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"student.kwargs {student.kwargs} do not build {student.name!r}: {err}") from err
    if traits is None:  # a hub/local reference: the task checks the heads at the first step
        return
    if distill.heads == "split" and not traits.two_heads:
        raise RecipeError(f"distill.heads is 'split' but student {student.name!r} has no distillation head: "
                          "use a two-head student (e.g. a DeiT '*_distilled_*' model), or distill.heads: cls")
    if distill.heads == "split" and distill.method == "none":
        raise RecipeError("distill.heads is 'split' but distill.method is 'none': there is nothing to put on the "
                          "distillation head; use distill.heads: cls (both heads then learn the labels)")
    if traits.two_heads and distill.heads == "cls" and distill.method != "none":
        raise RecipeError(
            f"student {student.name!r} has two heads and evaluation averages them, but distill.heads 'cls' trains "
            "only the class head: set distill.heads: split (CE on the class head, distillation on the "
            "distillation head, as DeiT), or use a one-head student"
        )
    if recipe.train.grad_checkpointing and not traits.grad_checkpointing:
        raise RecipeError(f"train.grad_checkpointing is true but {student.name!r} has no set_grad_checkpointing: "
                          "set it to false")
    if recipe.optim.layer_decay is not None and not traits.layer_groups:
        raise RecipeError(f"optim.layer_decay needs a model with layer groups (timm's group_matcher), which "
                          f"{student.name!r} lacks: remove optim.layer_decay")


def _validate_regularisation(recipe: Recipe) -> None:
    """Label smoothing, Mixup/CutMix, EMA and layer decay: ranges, and the losses Mixup cannot serve."""
    mixup, train = recipe.mixup, recipe.train
    _check_range("train.label_smoothing", train.label_smoothing, 0.0, 1.0, high_open=True)
    _check_range("mixup.label_smoothing", mixup.label_smoothing, 0.0, 1.0, high_open=True)
    for key in ("prob", "switch_prob"):
        _check_range(f"mixup.{key}", getattr(mixup, key), 0.0, 1.0)
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(mixup, key) < 0:
            raise RecipeError(f"mixup.{key} must be >= 0 (0 = off), got {getattr(mixup, key)}")
    _check_choice("mixup.mode", mixup.mode, MIXUP_MODES)
    if recipe.optim.layer_decay is not None:
        _check_range("optim.layer_decay", recipe.optim.layer_decay, 0.0, 1.0, low_open=True)
    if train.model_ema is not None:
        _check_range("train.model_ema.decay", train.model_ema.decay, 0.0, 1.0, low_open=True, high_open=True)
    elif train.report == "ema":
        raise RecipeError("train.report is 'ema' but there is no EMA student: add train.model_ema: {decay: 0.9998}")
    if mixup.enabled:
        _validate_mixup(recipe)


def _validate_mixup(recipe: Recipe) -> None:
    if recipe.train.label_smoothing > 0:
        raise RecipeError("train.label_smoothing is set while Mixup/CutMix is on: timm's Mixup smooths the mixed "
                          "targets itself; move the value to mixup.label_smoothing")
    if recipe.train.batch_size % 2:
        raise RecipeError(f"Mixup/CutMix mixes each batch with its reverse and needs an even train.batch_size, "
                          f"got {recipe.train.batch_size}")
    if recipe.data.two_view:
        raise RecipeError("Mixup/CutMix with two views (data.two_view, CRLD) is not defined: CRLD's masks and "
                          "views need the unmixed images; set mixup.mixup_alpha and mixup.cutmix_alpha to 0")
    method = recipe.distill.method
    if method != "none" and type(build_loss(method, **recipe.distill.kwargs)).requires_target:
        raise RecipeError(f"distill.method '{method}' needs hard labels (its target class), but Mixup/CutMix makes "
                          "soft targets: set mixup.mixup_alpha and mixup.cutmix_alpha to 0, or use a loss without "
                          "labels (kd, luminet, deit_hard, deit_soft, ...)")


def _check_range(key: str, value: float, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise RecipeError(f"{key} must lie in {interval}, got {value}")
