"""Sweeps: grid parsing, the planned runs (seeds × grid points, own folders, validated), and running."""

import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from vitkd.recipe import RecipeError, load_recipe
from vitkd.sweep import parse_grid, plan_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(f"""
data: {{source: digits, transform: none, image_size: 8}}
teacher: {{name: cifar_resnet8}}
student: cifar_resnet8
distill: {{method: luminet, kwargs: {{temperature: 4.0, alpha: 31.0}}}}
train: {{epochs: 1, batch_size: 16, output_dir: "{tmp_path}/runs/{{name}}/seed{{seed}}"}}
""")
    return path


def test_parse_grid():
    assert parse_grid(["distill.kwargs.temperature=1, 2", "train.batch_size=32"]) == {
        "distill.kwargs.temperature": ["1", "2"],
        "train.batch_size": ["32"],
    }
    for bad in ("temperature", "=1,2", "t=1,,2", "t="):
        with pytest.raises(ValueError, match="key=v1,v2"):
            parse_grid([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_grid(["t=1", "t=2"])


def test_plan_is_grid_times_seeds_each_in_its_own_folder(recipe, tmp_path):
    grid = {"distill.kwargs.temperature": ["2", "8"], "train.batch_size": ["32", "64"]}
    runs = plan_sweep(recipe, seeds=[0, 1], grid=grid, overrides=["train.epochs=3"])
    assert len(runs) == 8 and len({run.output_dir for run in runs}) == 8
    point = {"distill.kwargs.temperature": "8", "train.batch_size": "32"}
    run = next(r for r in runs if r.seed == 1 and r.point == point)
    assert run.output_dir == tmp_path / "runs" / "small_temperature=8_batch_size=32" / "seed1"
    resolved = load_recipe(recipe, run.overrides)  # what scripts/distill.py will see
    assert resolved.distill.kwargs["temperature"] == 8.0 and resolved.train.batch_size == 32
    assert resolved.train.seed == 1 and resolved.train.epochs == 3 and resolved.run_dir() == run.output_dir


def test_plan_validates_every_run_before_starting(recipe):
    with pytest.raises(RecipeError, match="temprature"):
        plan_sweep(recipe, grid={"distill.kwargs.temprature": ["2"]})  # a keyword LumiNetLoss lacks
    with pytest.raises(RecipeError, match="batch_size"):
        plan_sweep(recipe, grid={"train.batch_size": ["1"]})  # LumiNet needs two samples per batch


def test_plan_refuses_runs_sharing_a_folder(recipe):
    with pytest.raises(ValueError, match=r"share the folder .*\{seed\}"):
        plan_sweep(recipe, seeds=[0, 1], overrides=["train.output_dir=runs/fixed"])


def test_run_sweep_skips_finished_runs_and_runs_the_rest_in_order(recipe, make_run):
    runs = plan_sweep(recipe, seeds=[0, 1, 2])
    shutil.copytree(make_run(), runs[1].output_dir)  # a finished run in the second run's folder
    printed, executed = [], []
    commands = run_sweep(runs, recipe, launcher=["accelerate", "launch"], echo=printed.append,
                         execute=executed.append)
    assert executed == commands and len(commands) == 2
    assert commands[0][:6] == ["accelerate", "launch", "-m", "vitkd.commands.distill", "--recipe", str(recipe)]
    assert commands[0][-2:] == ["--resume", "auto"]
    assert f"train.output_dir={runs[2].output_dir}" in commands[1]
    assert printed[1].startswith("# done, skipped") and shlex.split(printed[2]) == commands[1]

    executed.clear()
    run_sweep(runs, recipe, dry_run=True, echo=printed.append, execute=executed.append)
    assert executed == []


def test_sweep_script_dry_run(recipe, capsys):
    main = runpy.run_path(str(REPO / "scripts/sweep.py"))["main"]
    argv = ["--recipe", str(recipe), "--seeds", "0", "1", "--grid", "distill.kwargs.alpha=10,20", "--dry-run"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(shlex.split(line)[:3] == [sys.executable, "-m", "vitkd.commands.distill"]
                                   for line in lines)
    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", str(recipe), "--grid", "nonsense"])
    assert exit_info.value.code == 2
