"""``scripts/distill.py --plan``: what a recipe will do, resolved and checked, without training.

:func:`make_plan` gathers the models (names, parameter counts, weight sources), the data (source,
transform pipelines, sizes when the data can be opened without downloading or reading images), the
optimiser as the trainer builds it, the learning rate of every epoch as the trainer's scheduler sets
it, the distillation loss, batch sizes, precision and output folder, plus every preflight problem
(:mod:`vitkd.preflight`). :func:`format_plan` renders it for people; the dict itself is the JSON form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

from accelerate.data_loader import BatchSamplerShard
from torch import nn

from vitkd.data import build_loaders
from vitkd.data.transforms import eval_pipeline, train_views
from vitkd.engine.factory import build_optimizer, lr_per_update, min_train_batch, updates_in_epoch
from vitkd.engine.task import DistillationTask
from vitkd.preflight import inspect_recipe, source_opens_offline
from vitkd.recipe import Recipe

__all__ = ["format_plan", "make_plan"]


def make_plan(recipe: Recipe) -> dict[str, Any]:
    """The plan of ``recipe`` as JSON-able data; ``plan["problems"]`` is empty when it can run as it stands."""
    problems: list[str] = []
    data = _data_section(recipe, problems)
    report = inspect_recipe(recipe, num_classes=data.get("num_classes"))
    updates = data.get("updates_per_epoch")
    optimizer = _optimizer_section(recipe, problems)
    lrs = lr_per_update(recipe, updates or 1) if optimizer else []
    return {
        "recipe": recipe.name,
        "models": [vars(m) for m in report.models],
        "data": data,
        "optimizer": optimizer,
        "schedule": _schedule_section(recipe, updates),
        "lr_per_epoch": [epoch[0] for epoch in lrs],
        # per-update schedules: the lr of the first and the last update of each epoch
        "lr_first_last_per_epoch": None if recipe.schedule.step_on_epochs else [[e[0], e[-1]] for e in lrs],
        "kd_ramp_per_epoch": _kd_ramp(recipe),
        "loss": {
            "name": recipe.distill.method,
            "kwargs": recipe.distill.kwargs,
            "ce_weight": recipe.distill.ce_weight,
            "kd_weight": recipe.distill.kd_weight,
            "warmup_epochs": recipe.distill.warmup_epochs,
            "heads": recipe.distill.heads,
        },
        "training_options": _training_options(recipe),
        "epochs": recipe.train.epochs,
        "max_steps": recipe.train.max_steps,
        "processes": recipe.train.gpus,
        "per_device_batch": recipe.train.batch_size,
        "grad_accum_steps": recipe.train.grad_accum_steps,
        "global_batch": recipe.train.batch_size * recipe.train.gpus * recipe.train.grad_accum_steps,
        "mixed_precision": _precision(recipe),
        "output_dir": str(recipe.run_dir()),
        "problems": problems + report.problems,
        "notes": report.notes,
    }


# ----------------------------------------------------------------------------- sections


def _data_section(recipe: Recipe, problems: list[str]) -> dict[str, Any]:
    """Source, pipelines, and (when the data open without a download) class count and batches per epoch."""
    cfg = recipe.data
    section: dict[str, Any] = {
        "source": cfg.source,
        "train_split": cfg.train_split,
        "eval_split": cfg.eval_split,
        "image_size": cfg.effective_image_size,
        "in_chans": cfg.in_chans,
        "mean": list(cfg.effective_mean),
        "std": list(cfg.effective_std),
        "train_fraction": cfg.train_fraction,
        "streaming": cfg.streaming,
        "train_transforms": [_describe(view) for view in train_views(cfg)],
        "eval_transform": _describe(eval_pipeline(cfg)),
    }
    if cfg.streaming or not source_opens_offline(cfg):
        return section  # preflight says why (missing, not cached); reading it could start a download
    try:
        with _hub_offline():
            train_loader, eval_loader, info = build_loaders(
                cfg, batch_size=recipe.train.batch_size, eval_batch_size=recipe.train.eval_batch_size,
                seed=recipe.train.seed, min_batch=min_train_batch(recipe),
            )
    except (OSError, ValueError) as err:
        problems.append(f"data: {err}")
        return section
    shard = BatchSamplerShard(train_loader.batch_sampler, num_processes=recipe.train.gpus, process_index=0)
    section.update(
        num_classes=info.num_classes,
        train_samples=len(train_loader.dataset),
        eval_samples=len(eval_loader.dataset),
        batches_per_epoch=len(shard),  # per process, as Accelerate shards them
        updates_per_epoch=updates_in_epoch(recipe, len(shard)),
    )
    if len(shard) == 0:
        problems.append(f"data: {len(train_loader)} training batch(es) of {recipe.train.batch_size} shared by "
                        f"train.gpus={recipe.train.gpus} processes leave none per process: lower train.batch_size "
                        "or use more data")
    return section


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """A cached Hub dataset is opened from the cache only (no update check, never a download)."""
    with mock.patch.dict(os.environ, {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}):
        yield


def _describe(pipeline: Any) -> list[str]:
    """A transform pipeline as one line per step (torchvision/timm ``repr``)."""
    steps = getattr(pipeline, "transforms", [pipeline])
    return [" ".join(repr(step).split()) for step in steps]


def _optimizer_section(recipe: Recipe, problems: list[str]) -> dict[str, Any] | None:
    """The optimiser the trainer's factory builds, on a stand-in model with a weight and a bias."""
    try:
        optimizer = build_optimizer(recipe, nn.Linear(1, 1))
    except Exception as err:  # timm raises AssertionError/ValueError/TypeError for bad names or kwargs
        problems.append(f"optim: the optimiser cannot be built ({type(err).__name__}: {err}); check optim.opt "
                        "and optim.kwargs")
        return None
    defaults = optimizer.defaults
    return {
        "name": type(optimizer).__name__,
        "opt": recipe.optim.opt,
        "lr": recipe.optim.lr,
        "nesterov": bool(defaults.get("nesterov", False)),
        "momentum": defaults.get("momentum"),
        "betas": list(defaults["betas"]) if "betas" in defaults else None,
        "weight_decay": max(group["weight_decay"] for group in optimizer.param_groups),
        "weight_decay_on_bias_and_norm": not recipe.optim.filter_bias_and_bn,
        # the settings the parameters train with (timm puts weight decay into the param groups, so the
        # optimiser's own defaults can show 0 where every weight decays)
        "settings": {k: v for k, v in optimizer.param_groups[0].items()
                     if k != "params" and isinstance(v, (int, float, bool, str, type(None)))},
    }


def _schedule_section(recipe: Recipe, updates_per_epoch: int | None) -> dict[str, Any]:
    schedule = recipe.schedule
    section = {
        "sched": schedule.sched,
        "step_on_epochs": schedule.step_on_epochs,
        "decay_milestones": schedule.decay_milestones,
        "decay_rate": schedule.decay_rate,
        "warmup_epochs": schedule.warmup_epochs,
        "warmup_lr": schedule.warmup_lr,
        "min_lr": schedule.min_lr,
        "kwargs": schedule.kwargs,
    }
    if not schedule.step_on_epochs and updates_per_epoch is None:
        section["note"] = ("the lr changes every update, but the data could not be opened to count updates per "
                           "epoch: lr_per_epoch assumes 1 update per epoch")
    return section


def _kd_ramp(recipe: Recipe) -> list[float] | None:
    """Factor of the distillation term in each 1-based epoch, by the task's own rule (None without a teacher)."""
    if recipe.distill.method == "none":
        return None
    task = DistillationTask(nn.Identity(), warmup_epochs=recipe.distill.warmup_epochs)
    ramp = []
    for epoch in range(1, recipe.train.epochs + 1):
        task.set_epoch(epoch)
        ramp.append(task.kd_ramp)
    return ramp


def _precision(recipe: Recipe) -> str:
    """The precision the trainer will use: the launcher's (``accelerate launch --mixed_precision``, ``accelerate
    config``, seen as ``ACCELERATE_MIXED_PRECISION``), else the recipe's, else ``no``."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION") or recipe.train.mixed_precision or "no"


# ----------------------------------------------------------------------------- text


def _training_options(recipe: Recipe) -> dict[str, Any]:
    """Mixup/CutMix, label smoothing, repeated augmentation, EMA and the other timm training options."""
    train = recipe.train
    return {
        "mixup": {**dataclasses.asdict(recipe.mixup), "enabled": recipe.mixup.enabled},
        "label_smoothing": train.label_smoothing,
        "repeated_aug": recipe.data.repeated_aug,
        "model_ema": dataclasses.asdict(train.model_ema) if train.model_ema is not None else None,
        "layer_decay": recipe.optim.layer_decay,
        "channels_last": train.channels_last,
        "compile": train.compile,
        "grad_checkpointing": train.grad_checkpointing,
    }


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a human-readable report, problems last."""
    lines = [f"plan for recipe {plan['recipe']!r}"]
    for model in plan["models"]:
        params = f"{model['params'] / 1e6:.2f} M parameters" if model["params"] is not None else "not buildable"
        head = "" if model["num_classes"] is not None else " (timm's default head: the data's class count is unknown)"
        lines.append(f"  {model['role']}: {model['name']}, {params}{head}, weights: {model['weights']}")
    data = plan["data"]
    lines.append(f"  data: {data['source']} (train split {data['train_split']!r}, eval split "
                 f"{data['eval_split'] or 'auto'!r}), {data['in_chans']}x{data['image_size']}x{data['image_size']}, "
                 f"mean {data['mean']}, std {data['std']}")
    if "num_classes" in data:
        lines.append(f"    {data['num_classes']} classes, {data['train_samples']} training samples "
                     f"(train_fraction {data['train_fraction']}), {data['eval_samples']} evaluation samples, "
                     f"{data['batches_per_epoch']} batches per process per epoch")
    if data["streaming"]:
        lines.append("    training split streamed: epochs of (declared rows, cut by the slice) // global batch batches, "
                     "counted when the run starts")
    for i, view in enumerate(data["train_transforms"]):
        lines.append(f"    train transform{f' (view {i + 1})' if len(data['train_transforms']) > 1 else ''}:")
        lines += [f"      {step}" for step in view]
    lines.append("    eval transform:")
    lines += [f"      {step}" for step in data["eval_transform"]]
    optimizer = plan["optimizer"]
    if optimizer:
        lines.append(f"  optimiser: {optimizer['name']} (optim.opt {optimizer['opt']!r}), lr {optimizer['lr']}, "
                     f"momentum {optimizer['momentum']}, nesterov {optimizer['nesterov']}, weight decay "
                     f"{optimizer['weight_decay']} ({'' if optimizer['weight_decay_on_bias_and_norm'] else 'not '}"
                     "on biases and norm weights)")
    schedule = plan["schedule"]
    milestones = f", milestones {schedule['decay_milestones']}" if schedule["sched"] == "multistep" else ""
    lines.append(f"  schedule: {schedule['sched']} ({'per epoch' if schedule['step_on_epochs'] else 'per update'})"
                 f"{milestones}, warm-up {schedule['warmup_epochs']} epoch(s); lr in each epoch:")
    lines += [f"    {text}" for text in _runs_of_equal(plan["lr_per_epoch"], "lr")]
    if plan["lr_first_last_per_epoch"] is not None:
        lines.append("    (per-update schedule: the lr of each epoch's first update; last updates: "
                     + ", ".join(f"{last:.4g}" for _, last in plan["lr_first_last_per_epoch"][:8])
                     + (" ..." if len(plan["lr_first_last_per_epoch"]) > 8 else "") + ")")
    loss = plan["loss"]
    lines.append(f"  loss: {loss['ce_weight']} * CE" + ("" if loss["name"] == "none" else
                 f" + ramp * {loss['kd_weight']} * {loss['name']}({loss['kwargs']}), heads {loss['heads']}"))
    if plan["kd_ramp_per_epoch"] is not None:
        lines += [f"    {text}" for text in _runs_of_equal(plan["kd_ramp_per_epoch"], "ramp")]
    options = plan["training_options"]
    mixup = options["mixup"]
    lines.append("  training options: " + ", ".join([
        (f"Mixup {mixup['mixup_alpha']} / CutMix {mixup['cutmix_alpha']} (prob {mixup['prob']}, switch "
         f"{mixup['switch_prob']}, {mixup['mode']}, smoothing {mixup['label_smoothing']})"
         if mixup["enabled"] else "no Mixup/CutMix"),
        *(f"{key} {value}" for key, value in options.items() if key != "mixup"),
    ]))
    steps = (f", {data['updates_per_epoch']} optimiser updates per epoch" if "updates_per_epoch" in data else "")
    stop = f", stopping after {plan['max_steps']} updates" if plan["max_steps"] else ""
    lines.append(f"  training: {plan['epochs']} epochs{steps}{stop}; global batch {plan['global_batch']} = "
                 f"{plan['per_device_batch']} per device x {plan['processes']} process(es) x "
                 f"{plan['grad_accum_steps']} accumulation step(s); precision {plan['mixed_precision']}")
    lines.append(f"  output: {plan['output_dir']}")
    lines += [f"  note: {note}" for note in plan["notes"]]
    if plan["problems"]:
        lines.append(f"problems ({len(plan['problems'])}):")
        lines += [f"  - {problem}" for problem in plan["problems"]]
    else:
        lines.append("problems: none")
    return "\n".join(lines)


def _runs_of_equal(values: list[float], label: str, per_line: int = 8) -> list[str]:
    """Per-epoch values as text: runs of equal values as one line (``epochs 1-150: lr 0.05``), values that
    change every epoch (a ramp, a cosine) as lists of ``per_line`` epochs per line."""
    runs: list[list] = []  # [first epoch, last epoch, value]
    for epoch, value in enumerate(values, start=1):
        if runs and math.isclose(runs[-1][2], value, rel_tol=1e-12, abs_tol=0.0):
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch, value])
    lines: list[str] = []
    series: list[list] = []  # consecutive one-epoch runs, printed together
    for run in [*runs, None]:
        if run is not None and run[0] == run[1]:
            series.append(run)
            continue
        for i in range(0, len(series), per_line):
            chunk = series[i:i + per_line]
            lines.append(f"epochs {chunk[0][0]}-{chunk[-1][0]}: {label} " + ", ".join(f"{r[2]:.4g}" for r in chunk))
        series = []
        if run is not None:
            lines.append(f"epochs {run[0]}-{run[1]}: {label} {run[2]:.6g}")
    return lines
