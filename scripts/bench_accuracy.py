"""Top-1 and ECE of every distillation method on Fashion-MNIST in a low-data regime, by the real engine.

    python scripts/bench_accuracy.py --out bench/accuracy [--seeds 0 1 2] [--fraction 0.1]

Trains the teacher of recipes/bench/teacher.yaml once (reused from OUT/runs/teacher when present),
then the student of recipes/bench/<method>.yaml for every method and seed on ``--fraction`` of the
training set (finished runs are reused, so an interrupted benchmark continues). Writes
OUT/accuracy.json, OUT/accuracy.md (mean ± std over seeds, Δ vs KD and vs the student alone),
OUT/accuracy_bars.png and OUT/accuracy_curves.png. ``--set key=value`` changes every run's recipe
(e.g. ``--set train.epochs=1 --set data.max_eval_samples=500`` for a smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from vitkd.benchmark import accuracy, plots
from vitkd.benchmark.report import machine_info, write_outputs
from vitkd.cli import add_overrides_argument, user_errors
from vitkd.recipe import load_recipe
from vitkd.run_folder import RunFolder, read_run

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "bench"


def student_overrides(recipe_path: Path, seed: int, fraction: float, teacher: Path, extra: list[str]) -> list[str]:
    """The benchmark's settings of one student run; the teacher is ours, for methods that have one."""
    overrides = [f"train.seed={seed}", f"data.train_fraction={fraction}", *extra]
    if load_recipe(recipe_path, overrides).teachers:
        overrides.append(f"teacher.checkpoint={teacher}")
    return overrides


def describe(recipe_path: Path, overrides: list[str], seeds: list[int]) -> dict:
    """What the student runs share (read from a resolved recipe, so overrides show)."""
    r = load_recipe(recipe_path, overrides)
    return {
        "data": r.data.source, "image_size": r.data.effective_image_size, "in_chans": r.data.in_chans,
        "train_fraction": r.data.train_fraction, "student": r.student.name,
        "teacher": r.teachers[0].name if r.teachers else None, "epochs": r.train.epochs,
        "batch_size": r.train.batch_size, "report": r.train.report, "seeds": seeds,
        "eval_samples": r.data.max_eval_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="benchmark folder (runs, tables, plots)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the training set for students")
    parser.add_argument("--methods", nargs="+", default=list(accuracy.METHODS), choices=accuracy.METHODS)
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="folder of teacher.yaml and <method>.yaml")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 resists "
                        "other jobs on a shared machine far better)")
    add_overrides_argument(parser)  # applied to every run
    args = parser.parse_args()
    with user_errors(parser, FileNotFoundError):  # every recipe with the overrides, before anything trains
        for name in ["teacher", *args.methods]:
            load_recipe(args.recipes / f"{name}.yaml", args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    teacher_dir = accuracy.teacher_run_dir(args.out)
    teacher_train_s = accuracy.train_or_reuse(args.recipes / "teacher.yaml", teacher_dir, args.overrides)
    run_dirs: dict[str, list[Path]] = {m: [] for m in args.methods}
    for seed in args.seeds:  # seed-major: an interrupted benchmark has every method for its first seeds
        for method in args.methods:
            recipe_path = args.recipes / f"{method}.yaml"
            overrides = student_overrides(recipe_path, seed, args.fraction, RunFolder(teacher_dir).student, args.overrides)
            run_dir = accuracy.student_run_dir(args.out, method, seed)
            accuracy.train_or_reuse(recipe_path, run_dir, overrides)
            run_dirs[method].append(run_dir)
    wall_s = time.perf_counter() - start

    results = accuracy.summarise_methods(run_dirs)
    teacher = read_run(teacher_dir).metrics | {"train_s": teacher_train_s}
    kd_overrides = student_overrides(args.recipes / "kd.yaml", args.seeds[0], args.fraction, RunFolder(teacher_dir).student,
                                     args.overrides)
    setting = describe(args.recipes / "kd.yaml", kd_overrides, args.seeds)
    table = accuracy.results_table(results)
    machine = machine_info()
    markdown = accuracy.report_markdown(table, setting, teacher, machine, wall_s)
    data = {"setting": setting, "teacher": teacher, "machine": machine, "wall_s": wall_s,
            "methods": [dataclasses.asdict(r) for r in results]}
    write_outputs(args.out, "accuracy", data, markdown)
    names = [r.method for r in results]
    plots.bar_chart(names, {"top-1 (%)": ([r.top1_mean for r in results], [r.top1_std for r in results]),
                            "ECE (%)": ([r.ece_mean for r in results], [r.ece_std for r in results])},
                    args.out / "accuracy_bars.png", title=f"{setting['teacher']} → {setting['student']}, "
                    f"{setting['data']} {setting['train_fraction']:.0%}, mean ± std over {len(args.seeds)} seeds")
    plots.learning_curves({r.method: r.curve_top1 for r in results}, args.out / "accuracy_curves.png",
                          ylabel="test top-1 (%)", title=f"mean over {len(args.seeds)} seeds")
    print(markdown)


if __name__ == "__main__":
    main()
