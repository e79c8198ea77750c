"""The `vitkd` command and its subcommands: dispatch, --set handling, errors without tracebacks, and
evaluation that takes its data config from the export."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vitkd.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_has_a_main_and_a_script():
    import importlib

    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
        script = REPO / "scripts" / f"{module.rsplit('.', 1)[-1]}.py"
        assert f"from {module} import main" in script.read_text(), script


def test_recipe_error_is_one_line_without_traceback(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: digits}\nstudent: cifar_resnet8\ndistill: {method: none}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--recipe", str(recipe), "--set", "train.epoch=3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("vitkd distill: error: unknown key 'train.epoch'. Did you mean 'epochs'?")


@pytest.fixture(scope="module")
def gray_export(make_run):
    """A 1-channel 16 px student export, as the engine writes it."""
    return make_run("data.in_chans=1", "distill.method=none", "teacher=null") / "student"


def test_evaluate_takes_size_channels_and_normalisation_from_the_export(gray_export, tmp_path, capsys):
    config = json.loads((gray_export / "config.json").read_text())["pretrained_cfg"]
    assert config["input_size"] == [1, 16, 16]
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(gray_export), "--data", "digits", "--json", str(out),
                 "--set", "data.max_eval_samples=50", "--set", "data.num_workers=0"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["samples"] == 50 and 0.0 <= metrics["top1"] <= 100.0
    # the engine evaluated the same export on the same 100 images at the end of training
    run = gray_export.parent
    assert main(["evaluate", "--model", str(gray_export), "--data", "digits", "--json", str(out),
                 "--set", "data.max_eval_samples=100", "--set", "data.num_workers=0"]) == 0
    last = json.loads((run / "summary.json").read_text())["last"]
    assert json.loads(out.read_text())["top1"] == pytest.approx(last["top1"])


def test_evaluate_refuses_recipe_keys_without_a_recipe(gray_export, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(gray_export), "--data", "digits", "--set", "train.epochs=3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "only data.KEY=VALUE is accepted" in err and "Traceback" not in err


def test_evaluate_script_is_a_thin_wrapper(gray_export):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/evaluate.py"), "--model", str(gray_export)],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 2 and "give exactly one of --recipe and --data" in result.stderr
