"""Failures end to end on real runs (digits at 16 px, cifar_resnet8, no workers, a few steps).

Each test injects one fault (divergence, kill -9, a live second run, a changed recipe on resume, ...)
and checks that it is handled clearly and nothing is lost.
"""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from vitkd.engine import NonFiniteLossError, train
from vitkd.engine.checkpoint import (
    MANIFEST,
    CheckpointError,
    NonFiniteWeightsError,
    find_latest,
    verify_checkpoint,
)
from vitkd.engine.metrics import NonFiniteLogitsError
from vitkd.engine.resume import ResumeRecipeError
from vitkd.engine.trainer import Trainer
from vitkd.recipe import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def _raw(out: Path, teacher: Path | None = None, lr: float = 0.05, **train_cfg) -> dict:
    raw = {
        "name": "reliability",
        "data": {"source": "digits", "transform": "none", "image_size": 16, "num_workers": 0,
                 "persistent_workers": False, "max_eval_samples": 64},
        "student": "cifar_resnet8",
        "distill": {"method": "none"},
        "optim": {"lr": lr},
        "schedule": {"sched": "multistep", "decay_milestones": [1]},
        "train": {"epochs": 1, "batch_size": 64, "output_dir": str(out), "checkpoint_every": 0, "log_every": 5,
                  "cpu": True, **train_cfg},
    }
    if teacher is not None:
        raw["teacher"] = {"name": "cifar_resnet8", "checkpoint": str(teacher)}
        raw["distill"] = {"method": "kd"}
    return raw


def _recipe(*args, **kwargs):
    return recipe_from_dict(_raw(*args, **kwargs))


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_divergence_from_the_start_saves_only_finite_checkpoints(tmp_path, one_thread):
    run = tmp_path / "run"
    with pytest.raises((NonFiniteLossError, NonFiniteWeightsError), match="--resume auto --set optim.lr=1e"):
        train(_recipe(run, lr=1e4, log_every=1, checkpoint_every_steps=1, keep_checkpoints=50, max_steps=8))
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    assert checkpoints, "the first step was finite and saved"
    for folder in checkpoints:
        assert all(t.isfinite().all() for t in load_file(str(folder / "model.safetensors")).values()), folder


def test_divergence_advice_works_the_resumed_run_uses_and_records_the_new_lr(tmp_path, one_thread):
    run = tmp_path / "run"
    train(_recipe(run, epochs=2, max_steps=23, checkpoint_every=1))  # one good epoch, checkpointed
    with pytest.raises((NonFiniteLossError, NonFiniteWeightsError)) as err:  # lr spike on resume
        train(_recipe(run, lr=1e4, epochs=2, log_every=1, checkpoint_every=1), resume="auto")
    assert "step_000000023 holds finite weights" in str(err.value)
    assert "`--resume auto --set optim.lr=" in str(err.value)
    train(_recipe(run, lr=0.01, epochs=2, log_every=1, checkpoint_every=1), resume="auto")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [23, 46]
    assert records[-1]["lr"] == pytest.approx(0.001)  # epoch 2 of the new lr after milestone 1 (x0.1)
    resumes = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert resumes[-1]["changes"]["optim.lr"] == [1e4, 0.01] and resumes[-1]["step"] == 23
    assert yaml.safe_load((run / "recipe.yaml").read_text())["optim"]["lr"] == 0.01
    student = load_file(str(run / "student" / "model.safetensors"))
    assert all(t.isfinite().all() for t in student.values())


def test_kd_divergence_stops_with_the_documented_error(tmp_path, teacher_file, one_thread):
    with pytest.raises(NonFiniteLossError, match="--set optim.lr="):
        train(_recipe(tmp_path / "kd", teacher_file, lr=1e6, log_every=50, max_steps=10))


def test_a_teacher_with_nan_weights_is_named_before_training(tmp_path, one_thread):
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet8", num_classes=10)
    state = teacher.state_dict()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "nan_teacher.safetensors"
    save_file(state, str(path))
    with pytest.raises(NonFiniteLogitsError, match="teacher cifar_resnet8 produced NaN/inf logits for 64 of 64"):
        train(_recipe(tmp_path / "run", path, max_steps=1))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_refuses_a_changed_experiment_and_lists_the_difference(tmp_path, one_thread):
    run = tmp_path / "run"
    train(_recipe(run, max_steps=2))
    changed = _raw(run, max_steps=4, batch_size=32)
    changed["student"] = "cifar_resnet20"
    with pytest.raises(ResumeRecipeError, match=r"student.name: 'cifar_resnet8' -> 'cifar_resnet20'.*"
                                                r"train.batch_size: 64 -> 32"):
        train(recipe_from_dict(changed), resume="auto")


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):  # unpickling creates the file: stands for arbitrary code
        return (Path.touch, (Path(self.path),))


def test_resume_path_with_code_running_pickles_refuses_and_runs_nothing(tmp_path, one_thread):
    run = tmp_path / "run"
    train(_recipe(run, max_steps=2))
    folder = next((run / "checkpoints").glob("step_*"))
    marker = tmp_path / "code_ran"
    for pkl in [*folder.glob("*.pkl"), folder / "custom_checkpoint_0.pkl", folder / "custom_checkpoint_1.pkl"]:
        pkl.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(CheckpointError, match="refusing to load checkpoint"):
        train(_recipe(run, max_steps=4), resume=str(folder))
    assert not marker.exists()


def test_fresh_run_over_old_results_without_checkpoints_is_refused(tmp_path, one_thread):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "step": 5, "top1": 50.0}\n')
    with pytest.raises(FileExistsError, match=r"already holds a run \(metrics.jsonl\).*--resume auto"):
        train(_recipe(run, max_steps=1))
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1, "step": 5, "top1": 50.0}\n'


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path, capsys, one_thread):
    train(_recipe(tmp_path / "run", max_steps=1), resume="auto")
    assert f"--resume auto: no checkpoint in {tmp_path / 'run' / 'checkpoints'}, starting a fresh run" in (
        capsys.readouterr().out)


def test_resuming_an_earlier_checkpoint_logs_each_evaluation_once(tmp_path, one_thread):
    run = tmp_path / "run"
    train(_recipe(run, epochs=2, checkpoint_every=1, keep_checkpoints=5))
    first = sorted((run / "checkpoints").glob("step_*"))[0]
    assert _steps(run) == [23, 46]
    train(_recipe(run, epochs=2, checkpoint_every=1, keep_checkpoints=5), resume=str(first))
    assert _steps(run) == [23, 46]


def test_crash_after_an_evaluation_its_checkpoint_preceded_logs_it_once(tmp_path, monkeypatch, one_thread):
    """Step-cadence checkpoints come before the epoch's evaluation; a crash after it (here: in the final
    export) leaves a line the resumed run redoes."""
    run = tmp_path / "run"
    real_export = Trainer.export

    def crash_on_final_export(self, out_dir):
        if out_dir.name == "student":
            raise KeyboardInterrupt("killed during the export")
        real_export(self, out_dir)

    monkeypatch.setattr(Trainer, "export", crash_on_final_export)
    with pytest.raises(KeyboardInterrupt):
        train(_recipe(run, epochs=2, checkpoint_every=0, checkpoint_every_steps=23))
    assert _steps(run) == [23, 46]
    monkeypatch.setattr(Trainer, "export", real_export)
    train(_recipe(run, epochs=2, checkpoint_every=0, checkpoint_every_steps=23), resume="auto")
    assert _steps(run) == [23, 46]
    assert (run / "student" / "model.safetensors").is_file()


def _distill(recipe: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "distill.py"), "--recipe", str(recipe), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def test_a_second_run_into_a_live_run_folder_exits_non_zero_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(run, epochs=50, log_every=1)))
    first = _distill(recipe)
    try:
        for line in first.stdout:  # the first run is training
            if "| step " in line:
                break
        second = _distill(recipe, "--resume")
        out, _ = second.communicate(timeout=300)
        assert second.returncode != 0
        assert f"in use by the running PID {first.pid}" in out
        assert "Traceback" not in out
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.communicate()


KILLS = int(os.environ.get("VITKD_KILLS", "3"))


def test_kill_at_random_moments_then_resume_auto_finishes_with_a_loadable_student(tmp_path):
    """SIGKILL scripts/distill.py at random moments of training and saving (a checkpoint every step);
    ``--resume auto`` must always go on, and the final student must load."""
    run = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(run, epochs=max(2, KILLS // 4), checkpoint_every_steps=1,
                                          keep_checkpoints=2, log_every=1)))
    rng = random.Random(0)
    killed_at = []  # newest complete checkpoint step after each kill that hit a running process
    for _ in range(KILLS):
        proc = _distill(recipe, "--resume", "auto")
        for line in proc.stdout:  # wait for the first training step, then kill within the next few
            if "| step " in line:
                break
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        if proc.returncode == -signal.SIGKILL:
            latest = find_latest(run / "checkpoints")
            verify_checkpoint(latest)  # the newest complete checkpoint is intact
            killed_at.append(int(latest.name[5:]))
        else:
            assert proc.returncode == 0, out
        for folder in (run / "checkpoints").glob("step_*"):  # a folder with a checkpoint's name is complete
            assert (folder / MANIFEST).is_file()
    print(f"kill -9 tally: {KILLS} tried, {len(killed_at)} hit a running process, newest checkpoint after each: "
          f"{killed_at}")
    assert len(killed_at) >= KILLS // 2, "most kills must land while the run is going"
    final = _distill(recipe, "--resume", "auto")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert "done: " in out and "student exported to" in out
    model = timm.create_model(f"local-dir:{run / 'student'}", pretrained=True)
    assert model.fc.out_features == 10
    assert _steps(run) == sorted(set(_steps(run)))
