"""What a resumed run may change: the saved run's ``recipe.yaml`` against the recipe given now.

Keys that only steer how the run continues (learning rate and schedule, length, cadence, logging,
clipping, precision, workers) may change; they take effect after the checkpoint is loaded because
the optimiser's learning rate is recomputed from the new recipe's scheduler (:func:`sync_schedule`),
and each resume is recorded in the run folder (:meth:`vitkd.run_folder.RunFolder.append_resume`). Keys that define the experiment (model,
data, batch, method, seed, optimiser type, ...) are refused with the differences listed: a resumed
run would silently be a different experiment.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitkd.run_folder import RunFolder, flatten

__all__ = ["RESUMABLE_KEYS", "ResumeRecipeError", "check_fresh_run_dir", "check_resume_recipe", "recipe_changes",
           "record_resume", "sync_schedule"]

# fnmatch patterns of the dotted recipe keys that may differ on --resume
RESUMABLE_KEYS = (
    "name", "optim.lr", "schedule.*", "paper.*", "hub.*",
    "train.epochs", "train.max_steps", "train.eval_every", "train.eval_batch_size", "train.checkpoint_every",
    "train.checkpoint_every_steps", "train.keep_checkpoints", "train.log_every", "train.log_with",
    "train.clip_grad", "train.mixed_precision", "train.cpu", "train.report", "train.gpus", "train.output_dir",
    "data.num_workers", "data.persistent_workers", "data.pin_memory", "data.cache_dir", "data.max_eval_samples",
)


class ResumeRecipeError(ValueError):
    """The recipe given with --resume changes the experiment the checkpoint belongs to."""


def _resumable(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE_KEYS)


def recipe_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` of the allowed differences; raises on any other.

    Raises:
        ResumeRecipeError: listing every refused difference.
    """
    old_flat, new_flat = flatten(saved), flatten(new)
    keys = sorted(set(old_flat) | set(new_flat))
    missing = object()
    diffs = {k: (old_flat.get(k, missing), new_flat.get(k, missing)) for k in keys
             if old_flat.get(k, missing) != new_flat.get(k, missing)}
    show = {k: tuple("(absent)" if v is missing else v for v in pair) for k, pair in diffs.items()}
    refused = [k for k in diffs if not _resumable(k)]
    if refused:
        lines = "; ".join(f"{k}: {show[k][0]!r} -> {show[k][1]!r}" for k in refused)
        raise ResumeRecipeError(
            f"--resume: the recipe changes the experiment this checkpoint belongs to ({lines}). Only these keys may "
            f"change on resume: {', '.join(RESUMABLE_KEYS)}. Resume with the run's own recipe "
            "(its recipe.yaml) plus allowed --set overrides, or start a new run in another train.output_dir"
        )
    return show


def check_resume_recipe(folder: RunFolder, new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`recipe_changes` against the run's ``recipe.yaml`` (no changes when the run has none yet)."""
    saved = folder.read_saved_recipe()
    return {} if saved is None else recipe_changes(saved, new)


def record_resume(folder: RunFolder, checkpoint: Path, global_step: int,
                  changes: Mapping[str, tuple[Any, Any]]) -> str:
    """Record this resume in the run folder (main process) and return a one-line description."""
    folder.append_resume({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(checkpoint),
                          "step": global_step, "changes": {k: list(v) for k, v in changes.items()}})
    applied = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()) or "none"
    return f"resumed from {checkpoint} (step {global_step}); recipe changes applied: {applied}"


def sync_schedule(optimizer, scheduler, *, epoch: int, global_step: int, step_on_epochs: bool) -> None:
    """Set every param group's learning rate from the (new recipe's) timm ``scheduler`` after a load.

    Loading a checkpoint restores the optimiser's param groups with the *saved* ``lr``; the scheduler,
    built from the recipe given now, holds the new base values. Recomputing at the restored position
    gives the exact value the uninterrupted run had (same recipe) or the overridden one.
    ``epoch``: 0-based epoch in progress; ``global_step``: optimiser steps done.
    """
    for group, base in zip(optimizer.param_groups, scheduler.base_values, strict=True):
        group["initial_lr"] = base
    if (epoch if step_on_epochs else global_step) == 0:
        # the loop never calls step(0) (timm's step(t) means "t epochs done" and may already decay):
        # restore what the scheduler's constructor set, the warm-up start or the untouched base lr
        if getattr(scheduler, "warmup_t", 0):
            scheduler.update_groups(scheduler.warmup_lr_init)
        else:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"]
    elif step_on_epochs:
        scheduler.step(epoch)
    else:
        scheduler.step_update(global_step)


def check_fresh_run_dir(folder: RunFolder) -> None:
    """Refuse to start a fresh run (no --resume) in a folder holding another run's results or checkpoints."""
    found = folder.results_present()
    if found:
        raise FileExistsError(
            f"{folder.path} already holds a run ({', '.join(found)}): pass --resume auto to continue it, or choose "
            "another train.output_dir (e.g. --set train.output_dir=runs/new), or delete the folder to start over"
        )
