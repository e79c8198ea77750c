"""What a teacher-logit cache buys: epoch time with the live teacher, from a cache, and with no teacher.

:func:`cache_speed` trains one recipe three ways on the same synthetic image folder (noise images of the
recipe's image size, CIFAR-like 100 classes; speed does not depend on the pixels) through the real
engine (``vitkd.engine.train``: loader with augmentation, task, optimiser): with the live teacher, from a
float32 cache of the same epochs, and as plain supervised training of the student (the floor a
distillation run can reach). Epoch times are the trainer's ``train_time_s`` (evaluation excluded). The
teacher's weights are random (saved to a file, as a cache needs a checkpoint): speed does not depend on
them.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from vitkd.data.synthetic import write_image_folder
from vitkd.engine import train
from vitkd.recipe import load_recipe
from vitkd.run_folder import RunFolder
from vitkd.teacher_cache import bytes_per_sample, write_cache

__all__ = ["cache_speed"]


def _train_seconds(recipe_path: Path, overrides: list[str], run_dir: Path) -> float:
    """Summed ``train_time_s`` of a run's epochs."""
    train(load_recipe(recipe_path, [*overrides, f"train.output_dir={run_dir}"]))
    return sum(r["train_time_s"] for r in RunFolder(run_dir).read_metrics())


def cache_speed(
    recipe_path: str | Path,
    root: str | Path,
    *,
    per_class: int = 10,
    num_classes: int = 100,
    epochs: int = 1,
    num_workers: int = 0,
    dtype: str = "float32",
    topk: int | None = None,
    reps: int = 1,
) -> dict[str, float | list[float]]:
    """Train ``recipe_path`` live, cached and teacher-less on ``num_classes × per_class`` synthetic images.

    Returns seconds: ``live_s``, ``cached_s``, ``no_teacher_s`` (training time of ``epochs`` epochs),
    ``write_s`` (writing the cache), plus ``cached_over_no_teacher``, ``cached_over_live``,
    ``break_even_runs`` (cached runs after which writing the cache has paid for itself) and
    ``bytes_per_sample_epoch``. The three runs are repeated ``reps`` times, interleaved, and the medians
    reported (so a load change on a shared machine hits all three alike). ``root``: a scratch folder.
    """
    root, recipe_path = Path(root), Path(recipe_path)
    base = load_recipe(recipe_path)
    size = base.data.effective_image_size
    data = write_image_folder(root / "data", splits=("train", "test"), num_classes=num_classes,
                              per_class=per_class, size=size)
    teacher = base.teachers[0]
    checkpoint = root / "teacher.safetensors"
    model = timm.create_model(teacher.name, num_classes=num_classes, in_chans=base.data.in_chans, **teacher.kwargs)
    save_file(model.state_dict(), str(checkpoint))
    overrides = [f"data.source={data}", "data.label_column=null", "data.image_column=null",
                 f"data.num_workers={num_workers}", "data.train_fraction=1.0", "train.mixed_precision='no'",
                 f"data.max_eval_samples={num_classes}", f"teacher.checkpoint={checkpoint}",
                 f"train.epochs={epochs}", "train.max_steps=null", "train.checkpoint_every=0"]
    start = time.perf_counter()
    write_cache(load_recipe(recipe_path, overrides), root / "cache", epochs=epochs, dtype=dtype, topk=topk)
    write_s = time.perf_counter() - start
    manifest = json.loads((root / "cache" / "manifest.json").read_text())
    ways = {"live": overrides, "cached": [*overrides, f"teacher.cache={root / 'cache'}"],
            "alone": [*overrides, "distill.method=none", "teacher=null"]}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(reps):
        for name, way in ways.items():
            times[name].append(_train_seconds(recipe_path, way, root / f"{name}{rep}"))
    live, cached, alone = (statistics.median(times[name]) for name in ways)
    saved = live - cached
    return {
        "live_s": live, "cached_s": cached, "no_teacher_s": alone, "write_s": write_s,
        "cached_over_no_teacher": cached / alone, "cached_over_live": cached / live,
        "break_even_runs": write_s / saved if saved > 0 else float("inf"),
        "bytes_per_sample_epoch": float(bytes_per_sample(manifest)),
        "threads": float(torch.get_num_threads()),
        **{f"{name}_s_each": times[name] for name in ways},
    }
