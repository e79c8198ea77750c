"""The accuracy benchmark: every ``recipes/bench`` method tuned on a validation split, then tested over
paired seeds, trained by the real engine.

Protocol (docs/benchmarks.md states it in words):

1. **Data**: Fashion-MNIST's training set is split once (stratified, fixed seed) into a training pool
   and a held-out validation split; the test set is untouched until step 4. Students train on a
   stratified ``train_fraction`` of the pool drawn with the run's seed.
2. **Teacher**: ``teacher.yaml``, trained once and reused.
3. **Tuning**: every method runs each point of its grid (``grid.yaml``) once, with the tuning seed,
   evaluated on the validation split; the point with the best validation top-1 is chosen.
4. **Test**: every method at its chosen point over the test seeds, evaluated on the test set, last
   epoch. A seed fixes the training subset and the initialisation, so runs of one seed are paired.
5. **Statistics**: per method, paired differences vs KD and vs the student alone: mean, 95 % t-interval,
   paired t-test p, Holm-corrected within each family of comparisons.

Run folders (the engine's own layout) live under one benchmark folder::

    <out>/data/                          the split of step 1 (a ``save_to_disk`` DatasetDict)
    <out>/runs/teacher/
    <out>/runs/tune/<method>/<point>/    one tuning run per grid point
    <out>/runs/test/<method>/seed<seed>/ one test run per method and seed

A finished run (one with ``summary.json``) is never trained again, so an interrupted benchmark
continues where it stopped; an unfinished one is deleted and trained from the start.

Besides the recipe methods, ``kd_timm`` trains KD's chosen setting through timm's
``LogitDistillationTask`` in a short loop of its own (same parts from :func:`vitkd.engine.factory.build_parts`,
same seed, data, optimiser and schedule): an outside reference for the engine's KD.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vitkd.losses import available_losses
from vitkd.recipe import Recipe, load_recipe
from vitkd.run_folder import RunFolder, is_finished, read_run

__all__ = [
    "REFERENCE",
    "TIMM_KD",
    "Comparison",
    "RunSpec",
    "bench_methods",
    "grid_points",
    "holm",
    "paired_comparison",
    "prepare_split",
    "reliability_bins",
    "run_spec",
    "select_point",
]

logger = logging.getLogger(__name__)

REFERENCE = ("kd", "none")  # the two references of the paired differences
TIMM_KD = "kd_timm"  # KD's chosen setting trained through timm's LogitDistillationTask
WALL_TIME_FILE = "bench_wall_time.json"  # written beside the engine's files: seconds of the training
GRID_FILE = "grid.yaml"
SPLIT_SEED = 0  # seed of the pool/validation split of step 1: fixed, shared by every run


# ----------------------------------------------------------------------------- methods and grid


def bench_methods(recipes: str | Path) -> list[str]:
    """``none``, ``kd`` (the references), then every other registered loss that has a ``<recipes>/<loss>.yaml``,
    in registry order.

    The rule keeps losses registered for other settings (e.g. DeiT's distillation-token losses) out of
    the benchmark without a hand-written list: a loss enters the benchmark by getting a bench recipe.
    """
    recipes = Path(recipes)
    if not (recipes / "none.yaml").is_file():
        raise FileNotFoundError(f"{recipes / 'none.yaml'} is missing: --recipes must be a folder like recipes/bench")
    losses = [m for m in available_losses() if (recipes / f"{m}.yaml").is_file()]
    return ["none", *sorted(losses, key=lambda m: m != "kd")]


def grid_points(grid_file: str | Path, methods: Sequence[str]) -> dict[str, list[dict[str, object]]]:
    """``{method: [{recipe key: value}, ...]}``: the product of the lists ``grid_file`` gives each method.

    The file maps each method to ``{dotted recipe key: [values]}``; a method missing from it, or a key
    with an empty list, is an error naming the file, so no method runs untuned by accident.
    """
    grid_file = Path(grid_file)
    raw = yaml.safe_load(grid_file.read_text()) or {}
    missing = [m for m in methods if m not in raw]
    if missing:
        raise ValueError(f"{grid_file} has no grid for {missing}: add '<method>: {{recipe.key: [values]}}' "
                         "for each (the same number of points per method)")
    points = {}
    for method in methods:
        axes = raw[method]
        if not isinstance(axes, Mapping) or not axes or any(not isinstance(v, list) or not v for v in axes.values()):
            raise ValueError(f"{grid_file}: '{method}' must map recipe keys to non-empty lists, got {axes!r}")
        points[method] = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    return points


def point_name(point: Mapping[str, object]) -> str:
    """A folder name for a grid point: ``lr0.05_kd_weight0.25`` (last part of each key)."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in point.items())


def overrides_of(point: Mapping[str, object]) -> list[str]:
    return [f"{key}={value}" for key, value in point.items()]


def select_point(val_top1: Sequence[float]) -> int:
    """Index of the best validation top-1; ties go to the earlier point (the grid file's order)."""
    return max(range(len(val_top1)), key=lambda i: (val_top1[i], -i))


# ----------------------------------------------------------------------------- data split


def prepare_split(out: str | Path, *, validation_size: int, source: str = "fashion_mnist") -> Path:
    """``<out>/data``: the builtin ``source``'s ``train`` split cut into ``train`` (the pool) and a
    stratified ``validation`` of ``validation_size`` images (seed :data:`SPLIT_SEED`), plus its ``test``
    split unchanged. Reused when present with the same validation size."""
    import datasets

    from vitkd.data.builtin import load_builtin

    folder = Path(out) / "data"
    if (folder / "dataset_dict.json").is_file():
        present = datasets.load_from_disk(str(folder))
        if present["validation"].num_rows != validation_size:
            raise ValueError(f"{folder} holds a validation split of {present['validation'].num_rows} images, not "
                             f"{validation_size}: use another --out or the same --val-size")
        return folder
    splits = load_builtin(source)
    parts = splits["train"].train_test_split(test_size=validation_size, stratify_by_column="label", seed=SPLIT_SEED)
    datasets.DatasetDict({"train": parts["train"], "validation": parts["test"],
                          "test": splits["test"]}).save_to_disk(str(folder))
    return folder


# ----------------------------------------------------------------------------- runs


@dataclass
class RunSpec:
    """One run of the benchmark: a recipe with overrides, trained into ``run_dir`` by the engine, or by
    timm's task when ``timm`` is set."""

    recipe_path: str
    run_dir: str
    overrides: list[str] = field(default_factory=list)
    timm: bool = False
    threads: int = 1


def run_spec(spec: RunSpec) -> float | None:
    """Train ``spec`` unless a finished run is in its folder; seconds of training (the recorded ones when
    reused, None if none were recorded). A top-level function, so a process pool can run it."""
    import torch

    torch.set_num_threads(spec.threads)
    run_dir = Path(spec.run_dir)
    if is_finished(run_dir):
        return recorded_wall_time(run_dir)
    recipe = load_recipe(spec.recipe_path, [*spec.overrides, f"train.output_dir={run_dir}"])
    if run_dir.exists():
        logger.warning("%s holds an unfinished run: deleting it and training from the start", run_dir)
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    if spec.timm:
        _train_with_timm_task(recipe, run_dir)
    else:
        from vitkd.engine import train  # the engine pulls in Accelerate: only when something trains

        train(recipe)
    seconds = time.perf_counter() - start
    (run_dir / WALL_TIME_FILE).write_text(json.dumps({"train_s": seconds}) + "\n")
    print(f"{run_dir}: {seconds:.0f} s", flush=True)
    return seconds


def recorded_wall_time(run_dir: str | Path) -> float | None:
    path = Path(run_dir) / WALL_TIME_FILE
    return json.loads(path.read_text())["train_s"] if path.is_file() else None


def _train_with_timm_task(recipe: Recipe, run_dir: Path) -> None:
    """KD through timm's ``LogitDistillationTask``: the parts the engine would build (same seed, so the
    same initial student and data order), timm's task for the loss, a plain loop stepping the timm
    scheduler per epoch as the engine does. Writes the recipe, the summary (last epoch) and the exported
    student through :class:`vitkd.run_folder.RunFolder`, so :func:`vitkd.run_folder.read_run` reads it like
    an engine run. The engine's loop is not reused on purpose: the point is a step that does not go
    through vitkd's task."""
    from accelerate.utils import set_seed
    from timm.task.distillation import LogitDistillationTask
    from torch import nn

    from vitkd.engine.evaluate import evaluate
    from vitkd.engine.factory import build_parts
    from vitkd.engine.trainer import make_accelerator
    from vitkd.export import export_student

    d = recipe.distill
    if d.method != "kd" or d.warmup_epochs:
        raise ValueError(f"the timm reference trains KD without warm-up; got method {d.method!r}, "
                         f"warmup_epochs {d.warmup_epochs}")
    accelerator = make_accelerator(recipe.train, run_dir)
    set_seed(recipe.train.seed)
    parts = build_parts(recipe).prepare(recipe, accelerator)
    task = LogitDistillationTask(parts.student, parts.teacher, criterion=nn.CrossEntropyLoss(),
                                 task_loss_weight=d.ce_weight, distill_loss_weight=d.kd_weight,
                                 temperature=d.kwargs.get("temperature", 4.0), device=accelerator.device,
                                 verbose=False)
    updates, max_steps = 0, recipe.train.max_steps or math.inf
    for epoch in range(recipe.train.epochs):
        task.train()
        for batch in parts.train_loader:  # (images, targets[, sample indices for the logit cache])
            loss = task(batch[0], batch[1])["loss"]
            accelerator.backward(loss)
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            updates += 1
            if updates >= max_steps:
                break
        if updates >= max_steps:
            break
        parts.scheduler.step(epoch + 1)
    metrics = evaluate(parts.student, parts.eval_loader, accelerator) | {"epoch": epoch + 1, "step": updates}
    folder = RunFolder(run_dir)
    folder.write_recipe(recipe)
    export_student(parts.student, folder.student, recipe.student, parts.info)
    folder.write_summary({"report": "last", "last": metrics, "best": metrics})


def run_metrics(run_dir: str | Path) -> dict[str, float]:
    """The reported metrics (top1, ece, nll, ...) of a finished run folder."""
    return read_run(run_dir).metrics


# ----------------------------------------------------------------------------- statistics


@dataclass
class Comparison:
    """Paired differences ``method − reference`` over seeds, in top-1 points: mean, 95 % t-interval of the
    mean, two-sided paired t-test p and its Holm-corrected value (within the reference's family)."""

    reference: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float | None = None


def paired_comparison(values: Sequence[float], reference: Sequence[float], name: str) -> Comparison:
    """``values[i]`` and ``reference[i]`` come from the same seed i. Needs ≥ 2 pairs; a zero spread of the
    differences gives a zero-width interval and p = 1 if the mean is 0, else 0."""
    from scipy import stats

    if len(values) != len(reference) or len(values) < 2:
        raise ValueError(f"paired comparison vs {name} needs ≥ 2 pairs of equal length, got {len(values)} and "
                         f"{len(reference)}")
    diffs = [a - b for a, b in zip(values, reference, strict=True)]
    n, mean = len(diffs), statistics.fmean(diffs)
    sem = statistics.stdev(diffs) / math.sqrt(n)
    if sem == 0:
        return Comparison(name, n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = stats.t.ppf(0.975, n - 1) * sem
    p = float(stats.ttest_rel(values, reference).pvalue)
    return Comparison(name, n, mean, mean - half, mean + half, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order: sort ascending, multiply
    the k-th smallest (0-based) by (m − k), carry the running maximum, cap at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of the mean of ``values`` (≥ 2 of them)."""
    from scipy import stats

    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def reliability_bins(correct: Sequence[float], confidence: Sequence[float], bins: int) -> list[dict[str, float]]:
    """Equal-width confidence bins on (0, 1] (the binning of :func:`vitkd.engine.metrics.summarise`):
    per bin its count, accuracy and mean confidence (both in [0, 1]; None when empty)."""
    import torch

    confidence_t = torch.as_tensor(confidence, dtype=torch.float64)
    correct_t = torch.as_tensor(correct, dtype=torch.float64)
    index = (confidence_t * bins).ceil().clamp(1, bins).long() - 1
    count = torch.bincount(index, minlength=bins)
    acc = torch.bincount(index, weights=correct_t, minlength=bins)
    conf = torch.bincount(index, weights=confidence_t, minlength=bins)
    return [{"count": int(c), "accuracy": float(a / c) if c else None, "confidence": float(s / c) if c else None}
            for c, a, s in zip(count, acc, conf, strict=True)]


def model_reliability(model_dir: str | Path, recipe: Recipe, bins: int) -> list[dict[str, float]]:
    """Reliability bins of the exported model in ``model_dir`` on ``recipe``'s evaluation split."""
    import torch

    from vitkd.data import build_eval_loader
    from vitkd.engine.metrics import per_sample_stats
    from vitkd.export import load_model

    model = load_model(model_dir)
    loader, _ = build_eval_loader(recipe.data, batch_size=256)
    with torch.no_grad():
        stats = torch.cat([per_sample_stats(model(images), targets) for images, targets in loader])
    return reliability_bins(stats[:, 0].tolist(), stats[:, 3].tolist(), bins)


# ----------------------------------------------------------------------------- summary


@dataclass
class MethodSummary:
    """One method: its grid with validation top-1 (%), the chosen point, and per test seed top-1 / ECE (%) /
    NLL (nats); mean with 95 % t-interval; paired comparisons vs :data:`REFERENCE`; mean seconds per run."""

    method: str
    grid: list[dict]
    chosen: dict[str, object]
    seeds: list[int]
    top1: list[float]
    ece: list[float]
    nll: list[float]
    top1_mean: float = 0.0
    top1_ci: tuple[float, float] = (0.0, 0.0)
    ece_mean: float = 0.0
    nll_mean: float = 0.0
    train_s: float | None = None
    comparisons: dict[str, Comparison] = field(default_factory=dict)


def summarise(grids: Mapping[str, list[dict]], chosen: Mapping[str, dict], test_runs: Mapping[str, Sequence[Path]],
              seeds: Sequence[int]) -> list[MethodSummary]:
    """Summaries in the order of ``test_runs`` (``test_runs[method][i]`` is the run of ``seeds[i]``), with
    paired comparisons vs each reference present and Holm's correction within each reference's family
    (every other method compared with that reference)."""
    summaries = []
    for method, runs in test_runs.items():
        metrics = [run_metrics(r) for r in runs]
        walls = [w for w in map(recorded_wall_time, runs) if w is not None]
        s = MethodSummary(method, grids[method], dict(chosen[method]), list(seeds), [m["top1"] for m in metrics],
                          [m["ece"] for m in metrics], [m["nll"] for m in metrics])
        s.top1_mean, low, high = mean_ci(s.top1)
        s.top1_ci = (low, high)
        s.ece_mean, s.nll_mean = statistics.fmean(s.ece), statistics.fmean(s.nll)
        s.train_s = statistics.fmean(walls) if walls else None
        summaries.append(s)
    by_name = {s.method: s for s in summaries}
    for reference in REFERENCE:
        if reference not in by_name:
            continue
        family = [s for s in summaries if s.method != reference]
        for s in family:
            s.comparisons[reference] = paired_comparison(s.top1, by_name[reference].top1, reference)
        for s, p in zip(family, holm([s.comparisons[reference].p for s in family]), strict=True):
            s.comparisons[reference].p_holm = p
    return summaries


def _interval(c: Comparison | None) -> str:
    return "—" if c is None else f"{c.mean:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"


def _p(c: Comparison | None) -> str:
    return "—" if c is None else f"{c.p_holm:.3g}"


def results_table(summaries: Sequence[MethodSummary]) -> str:
    """Markdown: chosen setting and its validation top-1, test top-1 mean [95 % CI], paired Δ vs KD and vs
    none [95 % CI] with Holm-corrected p, mean ECE and NLL, seconds per run."""
    from vitkd.benchmark.report import markdown_table

    header = ["method", "chosen (val top-1)", "n", "test top-1 % [95 % CI]", "Δ vs KD [95 % CI]", "p Holm",
              "Δ vs none [95 % CI]", "p Holm", "ECE %", "NLL", "s/run"]
    rows = []
    for s in summaries:
        best = max(point["val_top1"] for point in s.grid)
        kd, none = s.comparisons.get("kd"), s.comparisons.get("none")
        rows.append([
            s.method, f"{point_name(s.chosen)} ({best:.2f})", len(s.top1),
            f"{s.top1_mean:.2f} [{s.top1_ci[0]:.2f}, {s.top1_ci[1]:.2f}]",
            _interval(kd), _p(kd), _interval(none), _p(none), f"{s.ece_mean:.2f}", f"{s.nll_mean:.3f}",
            "—" if s.train_s is None else f"{s.train_s:.0f}",
        ])
    return markdown_table(header, rows, numeric_from=2)


def summary_json(summaries: Sequence[MethodSummary]) -> dict[str, dict]:
    """``{method: {...}}`` for the JSON output (intervals as [low, high])."""
    from dataclasses import asdict

    out = {}
    for s in summaries:
        data = asdict(s)
        data.pop("method")
        data["top1_ci"] = list(s.top1_ci)
        data["comparisons"] = {ref: asdict(c) for ref, c in s.comparisons.items()}
        out[s.method] = data
    return out
