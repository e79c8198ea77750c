"""Every distillation method on Fashion-MNIST (28 px), tuned on a validation split, tested over paired seeds.

    python scripts/bench_accuracy.py --out runs/bench_accuracy [--jobs 2] [--seeds 0 1 2 3 4]

The protocol is :mod:`vitkd.benchmark.accuracy`'s (and docs/benchmarks.md's): split the training set
into a pool and a validation split; train the over-confident teacher of recipes/bench/teacher.yaml;
run every point of each method's grid (recipes/bench/grid.yaml) on the validation split; train every
method at its chosen point over the test seeds; report paired differences vs KD and vs the student
alone with 95 % intervals and Holm-corrected p-values, plus ECE/NLL and reliability diagrams.
Finished runs are reused, so an interrupted benchmark continues where it stopped. ``--report-only``
trains nothing and reports the test seeds every method has finished (to cut a run short).

Writes OUT/accuracy.json, OUT/accuracy.md, OUT/accuracy_top1.png, OUT/accuracy_paired.png and
OUT/accuracy_reliability.png. ``--set key=value`` changes every run's recipe (smoke run:
``--train-fraction 0.005 --teacher-fraction 0.005 --val-size 200 --test-samples 200 --seeds 0 1
--set train.epochs=1 --set train.max_steps=2``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from vitkd.benchmark import accuracy, plots
from vitkd.benchmark.accuracy import RunSpec
from vitkd.benchmark.report import machine_info, write_outputs
from vitkd.cli import add_overrides_argument, user_errors
from vitkd.engine.metrics import ECE_BINS
from vitkd.recipe import load_recipe
from vitkd.run_folder import RunFolder, is_finished

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "bench"


def run_all(specs: Sequence[RunSpec], jobs: int) -> None:
    """Train ``specs`` in order, ``jobs`` at a time (separate processes: one torch thread each scales
    better on shared cores than one process with several threads)."""
    if jobs == 1:
        for spec in specs:
            accuracy.run_spec(spec)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(accuracy.run_spec, specs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="benchmark folder (data split, runs, outputs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="test seeds (≥ 2)")
    parser.add_argument("--tune-seed", type=int, default=100, help="seed of the tuning runs (not a test seed)")
    parser.add_argument("--train-fraction", type=float, default=0.02, help="share of the pool per student run")
    parser.add_argument("--test-samples", type=int, default=5000,
                        help="test images evaluated (a fixed subset, the same for every run; 10000 = all)")
    parser.add_argument("--teacher-fraction", type=float, default=0.06, help="share of the pool for the teacher")
    parser.add_argument("--val-size", type=int, default=2500, help="images held out of the training set")
    parser.add_argument("--source", default="fashion_mnist", help="builtin dataset with train and test splits")
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="folder of teacher/grid/<method>.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report what has finished")
    add_overrides_argument(parser)  # applied to every run
    args = parser.parse_args()
    if len(args.seeds) < 2 or args.tune_seed in args.seeds:
        parser.error("--seeds needs ≥ 2 seeds, none of them the --tune-seed")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    with user_errors(parser, FileNotFoundError, ValueError):  # every recipe and grid point before training
        methods = accuracy.bench_methods(args.recipes)
        grids = accuracy.grid_points(args.recipes / accuracy.GRID_FILE, methods)
        for name in ["teacher", *methods]:
            load_recipe(args.recipes / f"{name}.yaml", args.overrides)
        for method, points in grids.items():
            for point in points:
                load_recipe(args.recipes / f"{method}.yaml", [*args.overrides, *accuracy.overrides_of(point)])
    data = accuracy.prepare_split(args.out, validation_size=args.val_size, source=args.source)
    runs = args.out / "runs"
    teacher = RunSpec(str(args.recipes / "teacher.yaml"), str(runs / "teacher"),
                      [f"data.source={data}", f"data.train_fraction={args.teacher_fraction}",
                       "data.eval_split=validation", *args.overrides], threads=args.threads)

    def spec(method: str, run_dir: Path, extra: list[str]) -> RunSpec:
        recipe_path = args.recipes / f"{'kd' if method == accuracy.TIMM_KD else method}.yaml"
        overrides = [f"data.source={data}", f"data.train_fraction={args.train_fraction}", *args.overrides, *extra]
        if load_recipe(recipe_path, overrides).teachers:
            overrides.append(f"teacher.checkpoint={RunFolder(runs / 'teacher').student}")
        return RunSpec(str(recipe_path), str(run_dir), overrides, timm=method == accuracy.TIMM_KD,
                       threads=args.threads)

    tune = {m: [spec(m, runs / "tune" / m / accuracy.point_name(p),
                     [*accuracy.overrides_of(p), f"train.seed={args.tune_seed}", "data.eval_split=validation"])
                for p in points] for m, points in grids.items()}
    if not args.report_only:
        run_all([teacher], 1)
        run_all([s for specs in tune.values() for s in specs], args.jobs)

    grid_results, chosen = _choose(grids, tune)
    tested = [*methods, accuracy.TIMM_KD]
    test = {m: {seed: spec(m, runs / "test" / m / f"seed{seed}",
                           [*accuracy.overrides_of(chosen[m]), f"train.seed={seed}", "data.eval_split=test",
                            f"data.max_eval_samples={args.test_samples}"])
                for seed in args.seeds} for m in tested}
    if not args.report_only:  # seed-major: an interrupted benchmark has every method for its first seeds
        run_all([test[m][seed] for seed in args.seeds for m in tested], args.jobs)
    seeds = [seed for seed in args.seeds if all(is_finished(test[m][seed].run_dir) for m in tested)]
    if len(seeds) < 2:
        raise SystemExit(f"only {len(seeds)} test seed(s) finished for every method: nothing to compare yet")
    all_runs = [teacher, *(s for specs in tune.values() for s in specs), *(test[m][s] for m in tested for s in seeds)]
    run_s = sum(accuracy.recorded_wall_time(s.run_dir) or 0.0 for s in all_runs)
    summaries = accuracy.summarise(grid_results, chosen, {m: [Path(test[m][s].run_dir) for s in seeds] for m in tested},
                                   seeds)
    _report(args, summaries, {m: test[m][seeds[0]] for m in tested}, runs / "teacher", seeds, data,
            {"invocation_s": time.perf_counter() - start, "runs_s": run_s})


def _choose(grids: dict[str, list[dict]], tune: dict[str, list[RunSpec]]) -> tuple[dict, dict]:
    """Per method its grid with validation top-1 and the chosen point; ``kd_timm`` takes KD's."""
    grid_results, chosen = {}, {}
    for method, points in grids.items():
        val = [accuracy.run_metrics(s.run_dir)["top1"] for s in tune[method]]
        grid_results[method] = [{"point": p, "val_top1": v} for p, v in zip(points, val, strict=True)]
        chosen[method] = points[accuracy.select_point(val)]
    grid_results[accuracy.TIMM_KD], chosen[accuracy.TIMM_KD] = grid_results["kd"], chosen["kd"]
    return grid_results, chosen


def _report(args: argparse.Namespace, summaries: list, first_seed: dict[str, RunSpec], teacher_dir: Path,
            seeds: list[int], data: Path, wall: dict[str, float]) -> None:
    """JSON, Markdown and plots; reliability diagrams of the teacher, KD and LumiNet (first seed) on the test
    images the runs were scored on."""
    kd = first_seed["kd"]
    kd_recipe = load_recipe(kd.recipe_path, kd.overrides)
    teacher_metrics = _teacher_test_metrics(Path(kd.run_dir))
    reliability = {
        f"teacher (ECE {teacher_metrics['ece']:.1f} %)":
            accuracy.model_reliability(RunFolder(teacher_dir).student, kd_recipe, ECE_BINS),
        **{f"{m} seed {seeds[0]} (ECE {accuracy.run_metrics(first_seed[m].run_dir)['ece']:.1f} %)":
           accuracy.model_reliability(RunFolder(first_seed[m].run_dir).student, kd_recipe, ECE_BINS)
           for m in ("kd", "luminet") if m in first_seed},
    }
    setting = _setting(args, kd_recipe, seeds, data)
    machine = machine_info()
    markdown = _markdown(accuracy.results_table(summaries), setting, teacher_metrics, machine, wall)
    write_outputs(args.out, "accuracy", {
        "setting": setting, "teacher": teacher_metrics, "machine": machine, "wall": wall,
        "methods": accuracy.summary_json(summaries), "reliability": reliability}, markdown)
    _plots(args.out, summaries, reliability, setting)
    print(markdown)


def _teacher_test_metrics(test_run: Path) -> dict:
    """The teacher's test-set metrics, as the engine measured them at the start of a test run."""
    import json

    return json.loads(RunFolder(test_run).summary_file.read_text())["teacher"]


def _setting(args: argparse.Namespace, recipe, seeds: list[int], data: Path) -> dict:
    import datasets

    pool = datasets.load_from_disk(str(data))["train"].num_rows
    return {
        "data": args.source, "image_size": recipe.data.effective_image_size, "pool": pool,
        "validation": args.val_size, "train_fraction": args.train_fraction,
        "train_images": round(args.train_fraction * pool), "teacher_fraction": args.teacher_fraction,
        "teacher_images": round(args.teacher_fraction * pool), "test_images": recipe.data.max_eval_samples or 10000,
        "student": recipe.student.name, "teacher": recipe.teachers[0].name, "epochs": recipe.train.epochs,
        "batch_size": recipe.train.batch_size, "tune_seed": args.tune_seed, "seeds": seeds,
        "overrides": args.overrides, "jobs": args.jobs, "threads": args.threads,
    }


def _markdown(table: str, setting: dict, teacher: dict, machine: dict, wall: dict[str, float]) -> str:
    return (
        f"## Accuracy: {setting['teacher']} → {setting['student']} on {setting['data']} {setting['image_size']} px\n\n"
        f"Students: {setting['train_images']} training images per seed ({setting['train_fraction']:.1%} of a "
        f"{setting['pool']}-image pool), {setting['epochs']} epochs, batch {setting['batch_size']}; tuned on "
        f"{setting['validation']} held-out validation images (seed {setting['tune_seed']}); tested on "
        f"{setting['test_images']} test images, last epoch, seeds {', '.join(map(str, setting['seeds']))}.\n"
        f"Teacher on the test set: top-1 {teacher['top1']:.2f} %, ECE {teacher['ece']:.2f} %, "
        f"NLL {teacher['nll']:.3f}.\n"
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, torch {machine['torch']}, load average at the end "
        f"{machine['load_average'][1]:.2f} (5 min). Training time recorded by the reported runs (teacher, grid, "
        f"test seeds): {wall['runs_s'] / 60:.1f} min; this invocation: {wall['invocation_s'] / 60:.1f} min "
        "(finished runs found in the folder are reused; s/run: mean recorded time of one test run).\n\n"
        "Δ: paired difference of test top-1 (points), mean over seeds with its 95 % t-interval; p: paired "
        "t-test, Holm-corrected within each column's family.\n\n" + table
    )


def _plots(out: Path, summaries, reliability: dict, setting: dict) -> None:
    n = len(setting["seeds"])
    plots.interval_panels({f"test top-1, mean and 95 % CI over {n} seeds":
                           {s.method: (s.top1_mean, *s.top1_ci) for s in summaries}},
                          out / "accuracy_top1.png", xlabel="top-1 (%)")
    panels = {f"paired Δ vs {ref}, 95 % CI": {s.method: (c.mean, c.ci_low, c.ci_high) for s in summaries
                                              if (c := s.comparisons.get(ref)) is not None}
              for ref in accuracy.REFERENCE}
    plots.interval_panels(panels, out / "accuracy_paired.png", xlabel="Δ top-1 (points)", zero_line=True)
    plots.reliability_diagrams(reliability, out / "accuracy_reliability.png",
                               title=f"test set, {ECE_BINS} bins")


if __name__ == "__main__":
    main()
