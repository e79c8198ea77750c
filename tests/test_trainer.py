"""The trainer's records and launch behaviour: per-epoch learning rates as really used, precision precedence,
multi-process CPU runs, preemption by SIGTERM (digits at 16 px, cifar_resnet8, CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from torch.optim.optimizer import register_optimizer_step_pre_hook

from vitkd.data import build_loaders
from vitkd.engine import train
from vitkd.engine.factory import lr_per_epoch, updates_in_epoch
from vitkd.recipe import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def recipe_dict(out, **overrides):
    raw = {
        "name": "trainer_test",
        "data": {"source": "digits", "transform": "none", "image_size": 16, "in_chans": 1, "num_workers": 0,
                 "persistent_workers": False, "max_eval_samples": 64, "train_fraction": 0.2},
        "student": "cifar_resnet8",
        "distill": {"method": "none"},
        "optim": {"lr": 0.1},
        "schedule": {"sched": "multistep", "decay_milestones": [2, 3], "decay_rate": 0.5},
        "train": {"epochs": 4, "batch_size": 32, "output_dir": str(out), "checkpoint_every": 0, "log_every": 2,
                  "cpu": True},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        raw[section] = {**raw[section], name: value}
    return raw


@pytest.fixture
def used_lrs():
    """Every optimiser step's learning rate, read from inside ``Optimizer.step`` (not from the trainer)."""
    seen: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(max(g["lr"] for g in opt.param_groups)))
    yield seen
    handle.remove()


@pytest.mark.parametrize("schedule", [
    {"sched": "multistep", "decay_milestones": [2, 3], "decay_rate": 0.5},
    {"sched": "cosine", "warmup_epochs": 1, "warmup_lr": 0.01, "step_on_epochs": False},
], ids=["multistep", "cosine_per_update"])
def test_metrics_lr_is_the_lr_used_in_that_epoch(tmp_path, used_lrs, schedule):
    recipe = recipe_from_dict({**recipe_dict(tmp_path / "run"), "schedule": schedule})
    train(recipe)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    per_epoch = len(used_lrs) // recipe.train.epochs
    assert per_epoch * recipe.train.epochs == len(used_lrs) and per_epoch > 1
    used = [used_lrs[e * per_epoch:(e + 1) * per_epoch] for e in range(recipe.train.epochs)]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    for record, lrs in zip(records, used, strict=True):
        assert record["lr"] == lrs[0] and record["lr_last"] == lrs[-1]
    assert [r["lr"] for r in records] == pytest.approx(lr_per_epoch(recipe, updates_in_epoch(recipe, per_epoch)),
                                                      rel=1e-12)
    if schedule["sched"] == "multistep":  # decays FROM the 1-based epoch a timm milestone names
        assert [r["lr"] for r in records] == pytest.approx([0.1, 0.05, 0.025, 0.025])
    else:
        assert len(set(used[1])) > 1  # per-update cosine: the lr moves within an epoch
    train_loader, _, _ = build_loaders(recipe.data, batch_size=recipe.train.batch_size, seed=recipe.train.seed)
    samples = sum(len(batch[1]) for batch in train_loader)
    for record in records:  # throughput from training time alone
        assert record["train_time_s"] > 0 and record["eval_time_s"] > 0
        assert record["images_per_s"] == pytest.approx(samples / record["train_time_s"], rel=1e-6)


@pytest.mark.parametrize(("launcher", "in_recipe", "ran"), [
    ("bf16", None, "bf16"), ("no", "bf16", "no"), (None, "bf16", "bf16"), (None, None, "no"),
])
def test_launcher_precision_wins_over_the_recipe(tmp_path, monkeypatch, capsys, launcher, in_recipe, ran):
    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    raw = recipe_dict(tmp_path / "run", train__max_steps=1, train__epochs=1, train__mixed_precision=in_recipe)
    train(recipe_from_dict(raw))
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["hardware"]["mixed_precision"] == ran
    assert info["hardware"]["mixed_precision_from"] == ("launcher" if launcher else "recipe")
    warned = "launcher settings win" in capsys.readouterr().out
    assert warned == (launcher is not None and in_recipe is not None and launcher != in_recipe)


def _write_recipe(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", **overrides)))
    return path


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_torchrun_with_two_cpu_processes_forms_one_run(tmp_path):
    recipe = _write_recipe(tmp_path, train__epochs=1, train__max_steps=2)
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:  # a free port: a fixed one may be taken by another job on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port),
                           str(REPO / "scripts" / "distill.py"), "--recipe", str(recipe)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["hardware"]["num_processes"] == 2 and info["hardware"]["global_batch"] == 64
    assert proc.stdout.count("done:") == 1  # one run, reported once by the main process


def test_sigterm_checkpoints_at_a_step_and_resume_finishes(tmp_path):
    recipe = _write_recipe(tmp_path, train__epochs=200, train__log_every=1)
    cmd = [sys.executable, str(REPO / "scripts" / "distill.py"), "--recipe", str(recipe)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training is under way (a progress line), then preempt
        lines.append(line)
        if line.startswith("epoch 1/200 | step"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "--resume auto" in rest
    checkpoints = list((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert len(checkpoints) == 1 and not (tmp_path / "run" / "student").exists()
    started = time.perf_counter()
    done = subprocess.run([*cmd, "--resume", "auto", "--set", "train.epochs=1"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file(), time.perf_counter() - started
