"""The engine end to end on real data (scikit-learn digits at 16 px) with tiny CIFAR-zoo models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vitkd.engine import NonFiniteLossError, train
from vitkd.recipe import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def make_recipe(out, teacher_file, **train):
    train_cfg = {"epochs": 2, "batch_size": 32, "output_dir": str(out), "checkpoint_every": 0, "log_every": 5,
                 "cpu": True, **train}
    return recipe_from_dict({
        "name": "engine_test",
        "data": {"source": "digits", "transform": "none", "image_size": 16, "num_workers": 0,
                 "persistent_workers": False, "max_eval_samples": 100},
        "teacher": {"name": "cifar_resnet8", "checkpoint": str(teacher_file)},
        "student": "cifar_resnet8",
        "distill": {"method": "luminet", "kwargs": {"temperature": 4.0, "alpha": 4.0}, "ce_weight": 1.0,
                    "warmup_epochs": 2},
        "optim": {"lr": 0.05},
        "schedule": {"sched": "multistep", "decay_milestones": [1]},
        "train": train_cfg,
    })


def test_run_folder_contents_and_student_export(tmp_path, teacher_file):
    summary = train(make_recipe(tmp_path / "run", teacher_file))
    run = tmp_path / "run"
    assert {"recipe.yaml", "run_info.json", "metrics.jsonl", "summary.json", "student", "student_best",
            "checkpoints"} <= {p.name for p in run.iterdir()}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert summary["last"]["samples"] == 100 and summary["teacher"]["samples"] == 100
    assert json.loads((run / "summary.json").read_text())["last"] == summary["last"]
    info = json.loads((run / "run_info.json").read_text())
    assert info["hardware"]["global_batch"] == 32 and info["teacher_sha256"]["cifar_resnet8"]
    assert len(list((run / "checkpoints").glob("step_*"))) == 1  # only the final one (checkpoint_every: 0)
    assert not list((run / "checkpoints").glob(".tmp*"))
    # the export loads after `import vitkd` and carries the last weights
    ckpt = next((run / "checkpoints").glob("step_*")) / "model.safetensors"
    exported = load_file(str(run / "student" / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in load_file(str(ckpt)).items())


def test_resume_reproduces_the_uninterrupted_run(tmp_path, teacher_file, assert_same_export):
    train(make_recipe(tmp_path / "full", teacher_file))
    train(make_recipe(tmp_path / "split", teacher_file, max_steps=17))  # stops mid-epoch 1 and checkpoints
    with pytest.raises(FileExistsError, match="--resume auto"):
        train(make_recipe(tmp_path / "split", teacher_file))
    train(make_recipe(tmp_path / "split", teacher_file), resume="auto")
    assert_same_export(tmp_path / "full", tmp_path / "split")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, teacher_file):
    recipe = make_recipe(tmp_path / "nan", teacher_file, log_every=1, checkpoint_every_steps=1, keep_checkpoints=50)
    recipe.optim.lr = 1e12
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(recipe)
    checkpoints = sorted((tmp_path / "nan" / "checkpoints").glob("step_*"))
    assert checkpoints, "at least the first steps were finite and saved"
    for tensor in load_file(str(checkpoints[-1] / "model.safetensors")).values():
        assert torch.isfinite(tensor.float()).all()


def test_script_reports_recipe_typos_without_building_anything(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: digits}\nstudent: cifar_resnet8\ndistill: {method: none}\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "distill.py"), "--recipe", str(recipe), "--set", "train.epohcs=1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Did you mean 'epochs'" in result.stderr


def test_two_processes_train_evaluate_once_and_write_one_checkpoint(tmp_path, teacher_file):
    """The real script under `torchrun` with two CPU processes (gloo); Accelerate picks up the environment."""
    import yaml

    from vitkd.recipe import recipe_to_dict

    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(make_recipe(tmp_path / "ddp", teacher_file, epochs=1, batch_size=16))))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(REPO / "scripts" / "distill.py"), "--recipe", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"]["samples"] == 100  # every eval sample exactly once across the two processes
    assert len(list((run / "checkpoints").glob("step_*"))) == 1
    info = json.loads((run / "run_info.json").read_text())
    assert info["hardware"]["num_processes"] == 2 and info["hardware"]["global_batch"] == 32
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_bf16_autocast_on_cpu_trains_with_finite_float32_losses(tmp_path, teacher_file):
    recipe = make_recipe(tmp_path / "bf16", teacher_file, epochs=1, max_steps=6, log_every=2, mixed_precision="bf16")
    summary = train(recipe)
    assert summary["last"]["samples"] == 100
    record = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(isinstance(record[k], float) and record[k] == record[k] for k in ("train_loss", "train_kd", "nll"))
