"""Sweeps: one training run per seed × grid point of a recipe, each in its own run folder.

A grid is ``{"distill.kwargs.temperature": ["1", "2"], "train.batch_size": ["32", "64"]}`` (the
values are ``--set`` texts, typed by the recipe schema); the sweep is its Cartesian product times the
seeds. Every planned run is validated (by loading the recipe with its overrides) before any starts,
and gets ``train.seed`` and its own ``train.output_dir``: the recipe's ``output_dir`` template with
``{name}`` extended by the grid point, e.g. ``runs/cifar100/<name>_temperature=2/seed0``.

Runs go one after another through ``<launcher> -m vitkd.commands.distill`` subprocesses (``--resume
auto``; the launcher is ``python`` or e.g. ``accelerate launch``), so an interrupted sweep continues
where it stopped when started again; finished runs (:func:`vitkd.run_folder.is_finished`) are skipped.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vitkd.recipe import load_recipe
from vitkd.run_folder import is_finished

__all__ = ["DISTILL_MODULE", "SweepRun", "parse_grid", "plan_sweep", "run_sweep"]

DISTILL_MODULE = "vitkd.commands.distill"  # what each run executes, as `<launcher> -m DISTILL_MODULE ...`


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its seed, grid point (key -> value text), folder and ``--set`` overrides."""

    seed: int
    point: dict[str, str]
    output_dir: Path
    overrides: tuple[str, ...]

    def command(self, recipe: str | Path, launcher: Sequence[str]) -> list[str]:
        """``launcher -m vitkd.commands.distill --recipe R --set ... --resume auto`` as an argument list."""
        sets = [arg for override in self.overrides for arg in ("--set", override)]
        return [*launcher, "-m", DISTILL_MODULE, "--recipe", str(recipe), *sets, "--resume", "auto"]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c=x"]`` -> ``{"a.b": ["1", "2"], "c": ["x"]}`` (values are split on commas)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        options = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(options):
            raise ValueError(f"--grid expects key=v1,v2,... (e.g. distill.kwargs.temperature=2,4): {item!r}")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice: give all its values in one key=v1,v2,... item")
        grid[key] = options
    return grid


def plan_sweep(
    recipe: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    grid: Mapping[str, Sequence[str]] | None = None,
    overrides: Sequence[str] = (),
) -> list[SweepRun]:
    """Every (grid point, seed) run of ``recipe``, each validated; raises ``vitkd.recipe.RecipeError`` on
    a bad key or value, and ValueError when two runs would share a folder."""
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    grid = dict(grid or {})
    runs = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        for seed in seeds:
            sets = [*overrides, *(f"{k}={v}" for k, v in point.items()), f"train.seed={seed}"]
            resolved = load_recipe(recipe, sets)
            output_dir = dataclasses.replace(resolved, name=resolved.name + _point_tag(point)).run_dir()
            runs.append(SweepRun(seed, point, output_dir, (*sets, f"train.output_dir={output_dir}")))
    _check_distinct_folders(runs)
    return runs


def _point_tag(point: Mapping[str, str]) -> str:
    """``{"distill.kwargs.temperature": "2"}`` -> ``"_temperature=2"`` (full keys where last parts clash)."""
    last = [key.rsplit(".", 1)[-1] for key in point]
    names = [short if last.count(short) == 1 else key for short, key in zip(last, point, strict=True)]
    return "".join(f"_{name}={_path_safe(value)}" for name, value in zip(names, point.values(), strict=True))


def _path_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def _check_distinct_folders(runs: Sequence[SweepRun]) -> None:
    seen: dict[Path, SweepRun] = {}
    for run in runs:
        if run.output_dir in seen:
            other = seen[run.output_dir]
            raise ValueError(
                f"runs (seed {other.seed}, {other.point}) and (seed {run.seed}, {run.point}) would share "
                f"the folder {run.output_dir}: train.output_dir must contain {{name}} and {{seed}}"
            )
        seen[run.output_dir] = run


def run_sweep(
    runs: Sequence[SweepRun],
    recipe: str | Path,
    *,
    launcher: Sequence[str] = (sys.executable,),
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    execute: Callable[[list[str]], object] = lambda cmd: subprocess.run(cmd, check=True),
) -> list[list[str]]:
    """Print and run (with ``dry_run``: only print) each unfinished run's command in turn; returns them.

    A failing run stops the sweep (``subprocess.CalledProcessError``); the finished runs stay.
    """
    commands = []
    for run in runs:
        if is_finished(run.output_dir):
            echo(f"# done, skipped: {run.output_dir}")
            continue
        cmd = run.command(recipe, launcher)
        echo(shlex.join(cmd))
        if not dry_run:
            execute(cmd)
        commands.append(cmd)
    return commands

