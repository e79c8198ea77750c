"""The accuracy benchmark: the ``recipes/bench`` methods over seeds, trained by the real engine.

Run folders (the engine's own layout, :mod:`vitkd.run_folder`) live under one benchmark folder::

    <out>/runs/teacher/                 the teacher, trained once and reused
    <out>/runs/<method>/seed<seed>/     one student run per method and seed

A finished run (one with ``summary.json``) is never trained again, so an interrupted benchmark
continues where it stopped; an unfinished one is deleted and trained from the start (its runs are
short and keep no intermediate checkpoints). Aggregation reuses :mod:`vitkd.results` (mean ± sample std over seeds,
Δ vs KD trained under the same settings) and adds Δ vs the student alone and the mean learning curve.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vitkd.benchmark.report import markdown_table
from vitkd.recipe import load_recipe
from vitkd.results import ResultRow, aggregate, format_mean_std, format_signed
from vitkd.run_folder import RunFolder, is_finished, read_run

__all__ = [
    "METHODS",
    "MethodResult",
    "mean_curve",
    "read_curve",
    "report_markdown",
    "results_table",
    "student_run_dir",
    "summarise_methods",
    "teacher_run_dir",
    "train_or_reuse",
]

logger = logging.getLogger(__name__)

# The student alone first, KD (the reference of Δ) second, as in the paper's tables.
METHODS = ("none", "kd", "dkd", "luminet", "crld", "ls_kd", "dist")
WALL_TIME_FILE = "bench_wall_time.json"  # written beside the engine's files: seconds of train()


def teacher_run_dir(out: str | Path) -> Path:
    return Path(out) / "runs" / "teacher"


def student_run_dir(out: str | Path, method: str, seed: int) -> Path:
    return Path(out) / "runs" / method / f"seed{seed}"


def train_or_reuse(recipe_path: str | Path, run_dir: str | Path, overrides: Sequence[str] = ()) -> float | None:
    """Train ``recipe_path`` (with ``--set``-style ``overrides``) into ``run_dir`` unless a finished run
    is already there; return the wall-clock seconds of the training (the recorded ones when reused,
    None if none were recorded)."""
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        return _recorded_wall_time(run_dir)
    from vitkd.engine import train  # the engine pulls in Accelerate: only when something trains

    recipe = load_recipe(recipe_path, [*overrides, f"train.output_dir={run_dir}"])
    if run_dir.exists():
        logger.warning("%s holds an unfinished run: deleting it and training from the start", run_dir)
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    train(recipe)
    seconds = time.perf_counter() - start
    (run_dir / WALL_TIME_FILE).write_text(json.dumps({"train_s": seconds}) + "\n")
    return seconds


def _recorded_wall_time(run_dir: Path) -> float | None:
    path = run_dir / WALL_TIME_FILE
    return json.loads(path.read_text())["train_s"] if path.is_file() else None


def read_curve(run_dir: str | Path, key: str = "top1") -> list[float]:
    """``key`` after each evaluation of a run, in epoch order, from its ``metrics.jsonl``."""
    records = RunFolder(run_dir).read_metrics()
    if not records:
        raise FileNotFoundError(f"{run_dir} has no evaluations in its metrics log: is it a finished vitkd run folder?")
    return [r[key] for r in sorted(records, key=lambda r: r["epoch"])]


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Epoch-wise mean of equally long curves (one per seed)."""
    lengths = {len(c) for c in curves}
    if len(lengths) != 1:
        raise ValueError(f"curves of different lengths {sorted(lengths)}: were the runs trained for different epochs?")
    return [statistics.fmean(values) for values in zip(*curves, strict=True)]


@dataclass
class MethodResult:
    """One method over its seeds. Top-1 and ECE in %, mean ± sample std (std None for one run);
    ``delta_kd`` / ``delta_none``: top-1 mean minus KD's / the student alone's (None for the reference
    itself or when it was not run); ``curve_top1``: mean top-1 after each epoch; ``train_s``: mean
    wall-clock seconds of one run's training (None when not recorded)."""

    method: str
    n: int
    top1_mean: float
    top1_std: float | None
    ece_mean: float | None
    ece_std: float | None
    delta_kd: float | None
    delta_none: float | None
    curve_top1: list[float]
    train_s: float | None
    runs: list[str]


def summarise_methods(run_dirs: Mapping[str, Sequence[str | Path]]) -> list[MethodResult]:
    """``run_dirs[method]`` = finished run folders of that method (one per seed) → one result per method,
    in the order of ``run_dirs``. Every method's runs must share all settings but the seed."""
    rows = aggregate([read_run(path) for paths in run_dirs.values() for path in paths])
    by_method: dict[str, ResultRow] = {}
    for row in rows:
        if row.method in by_method:
            raise ValueError(f"the {row.method!r} runs differ in more than the seed ({row.variant}): "
                             "benchmark runs of one method must share their settings")
        by_method[row.method] = row
    none = by_method.get("none")
    return [_method_result(by_method[m], run_dirs[m], none) for m in run_dirs]


def _method_result(row: ResultRow, paths: Sequence[str | Path], none: ResultRow | None) -> MethodResult:
    walls = [w for w in (_recorded_wall_time(Path(p)) for p in paths) if w is not None]
    return MethodResult(
        method=row.method,
        n=row.n,
        top1_mean=row.top1_mean,
        top1_std=row.top1_std,
        ece_mean=row.ece_mean,
        ece_std=row.ece_std,
        delta_kd=row.delta_kd,
        delta_none=None if none is None or row is none else row.top1_mean - none.top1_mean,
        curve_top1=mean_curve([read_curve(p) for p in paths]),
        train_s=statistics.fmean(walls) if walls else None,
        runs=[str(p) for p in paths],
    )


def results_table(results: Sequence[MethodResult]) -> str:
    """Markdown: one row per method with top-1 and ECE (mean ± std), Δ vs KD and vs the student alone."""
    header = ["method", "n", "top-1 (%)", "Δ vs KD", "Δ vs none", "ECE (%)", "train s/run"]
    rows = [
        [
            r.method,
            r.n,
            format_mean_std(r.top1_mean, r.top1_std, empty="—"),
            format_signed(r.delta_kd, empty="—"),
            format_signed(r.delta_none, empty="—"),
            format_mean_std(r.ece_mean, r.ece_std, empty="—"),
            "—" if r.train_s is None else f"{r.train_s:.0f}",
        ]
        for r in results
    ]
    return markdown_table(header, rows)


def report_markdown(table: str, setting: Mapping, teacher: Mapping, machine: Mapping, wall_s: float) -> str:
    """The accuracy report: setting, teacher, machine, wall time, then ``table``."""
    seeds = setting["seeds"]
    evaluation = "full test set" if setting["eval_samples"] is None else f"{setting['eval_samples']} test images"
    return (
        f"## Accuracy: {setting['teacher']} → {setting['student']} on {setting['data']}\n\n"
        f"{setting['train_fraction']:.0%} of the training set, {setting['image_size']} px, "
        f"{setting['in_chans']} channel(s), {setting['epochs']} epochs, batch {setting['batch_size']}; "
        f"{evaluation}; {setting['report']} epoch reported; seeds {', '.join(map(str, seeds))}.\n"
        f"Teacher: top-1 {teacher['top1']:.2f} %, ECE {teacher['ece']:.2f} %{_seconds(teacher.get('train_s'))}.\n"
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, torch {machine['torch']}, "
        f"load average at the end {machine['load_average'][1]:.2f} (5 min). "
        f"Wall time of this invocation: {wall_s / 60:.1f} min (finished runs found in the folder are reused, "
        "not retrained; the last column gives each run's recorded training time).\n\n"
        f"Top-1 and ECE: mean ± sample std over the seeds; Δ: difference of the mean top-1.\n\n{table}"
    )


def _seconds(train_s: float | None) -> str:
    return "" if train_s is None else f", trained in {train_s / 60:.1f} min"
