"""Run lock, resume overrides, numeric recipe validation and the clear errors for damaged inputs."""

import json
import os
import random
import socket
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch
from accelerate import Accelerator
from timm.scheduler import create_scheduler_v2

from vitkd.engine.metrics import NonFiniteLogitsError, per_sample_stats, summarise
from vitkd.engine.resume import (
    ResumeRecipeError,
    recipe_changes,
    record_resume,
    sync_schedule,
)
from vitkd.engine.run_lock import LOCK_FILE, RunLockedError, acquire, release, run_lock
from vitkd.models import load_weights
from vitkd.recipe import RecipeError, recipe_from_dict, recipe_to_dict, validate_precision
from vitkd.run_folder import RunFolder

# ----------------------------------------------------------------------------- run lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_taker_is_refused_with_pid_and_host_then_released(tmp_path):
    path = acquire(tmp_path)
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
        acquire(tmp_path)
    release(path)
    assert not path.exists()
    release(acquire(tmp_path))


def test_a_live_process_holding_the_lock_refuses_another(tmp_path):
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys,time; from pathlib import Path; from vitkd.engine.run_lock import acquire;"
                              f"acquire(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by the running PID {child.pid} on host {socket.gethostname()}"):
            acquire(tmp_path)
    finally:
        child.kill()
        child.wait()
    release(acquire(tmp_path))  # now stale: taken over


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "time": 1.0}))
    path = acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_reused_pid_started_after_the_lock_is_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                  "time": 1.0}))  # alive, but started long after 1970
    assert json.loads(acquire(tmp_path).read_text())["pid"] == os.getpid()


def test_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time()}))
    with pytest.raises(RunLockedError, match=f"PID 1 on host elsewhere.*delete {tmp_path / LOCK_FILE}"):
        acquire(tmp_path)


def test_run_lock_context_releases_on_error(tmp_path):
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ZeroDivisionError), run_lock(accelerator, tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
        raise ZeroDivisionError
    assert not (tmp_path / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- resume overrides


def _recipe(**train):
    return recipe_to_dict(recipe_from_dict({
        "name": "r", "data": {"source": "digits"}, "student": "cifar_resnet8",
        "distill": {"method": "none"}, "train": {"epochs": 3, **train},
    }))


def test_allowed_resume_changes_are_returned():
    saved, new = _recipe(), _recipe(epochs=5, clip_grad=1.0)
    new["optim"]["lr"] = 0.005
    assert recipe_changes(saved, new) == {"optim.lr": (0.05, 0.005), "train.clip_grad": (None, 1.0),
                                          "train.epochs": (3, 5)}
    assert recipe_changes(saved, saved) == {}


def test_experiment_changes_are_refused_with_every_difference_listed():
    saved, new = _recipe(), _recipe(batch_size=32, seed=1)
    new["student"]["name"] = "cifar_resnet20"
    new["optim"]["lr"] = 0.1
    with pytest.raises(ResumeRecipeError) as err:
        recipe_changes(saved, new)
    message = str(err.value)
    for text in ("student.name: 'cifar_resnet8' -> 'cifar_resnet20'", "train.batch_size: 64 -> 32",
                 "train.seed: 0 -> 1"):
        assert text in message
    assert "optim.lr:" not in message.split("Only these keys")[0]


def test_precision_may_change_on_resume():
    assert recipe_changes(_recipe(), _recipe(mixed_precision="bf16")) == {"train.mixed_precision": (None, "bf16")}


def test_record_resume_appends_a_log_line(tmp_path):
    line = record_resume(RunFolder(tmp_path), tmp_path / "step_1", 7, {"optim.lr": (0.05, 0.005)})
    assert "optim.lr 0.05 -> 0.005" in line
    record = json.loads((tmp_path / "resumes.jsonl").read_text())
    assert record["step"] == 7 and record["changes"] == {"optim.lr": [0.05, 0.005]}


def test_keep_metrics_keeps_the_first_lines_and_drops_a_cut_line(tmp_path):
    folder = RunFolder(tmp_path)
    log = folder.metrics_file
    log.write_text('{"step": 22}\n{"step": 44}\n{"step": 44}\n{"step": 6')
    assert folder.keep_metrics(2) == 2
    assert log.read_text() == '{"step": 22}\n{"step": 44}\n'
    log.write_text('{"step": 22}\n{"step": 4')
    assert folder.keep_metrics(5) == 1 and log.read_text() == '{"step": 22}\n'


@pytest.mark.parametrize("on_epochs", [True, False])
def test_sync_schedule_uses_the_new_base_lr_at_the_restored_position(on_epochs):
    """A loaded optimiser carries the old lr; after the sync it follows the rebuilt (new-lr) schedule."""
    model = torch.nn.Linear(2, 2)

    def build(lr):
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        sched, _ = create_scheduler_v2(opt, sched="multistep", num_epochs=4, decay_milestones=[2], decay_rate=0.1,
                                       step_on_epochs=on_epochs, updates_per_epoch=10)
        return opt, sched

    old_opt, _ = build(1.0)
    new_opt, new_sched = build(0.01)
    new_opt.load_state_dict(old_opt.state_dict())  # what load_state does
    assert new_opt.param_groups[0]["lr"] == 1.0
    sync_schedule(new_opt, new_sched, epoch=3, global_step=30, step_on_epochs=on_epochs)
    assert new_opt.param_groups[0]["lr"] == pytest.approx(0.001)
    # at position 0 the loop has not stepped the scheduler yet: the constructor's value is restored
    sync_schedule(new_opt, new_sched, epoch=0, global_step=0, step_on_epochs=on_epochs)
    assert new_opt.param_groups[0]["lr"] == 0.01


def test_sync_schedule_at_position_zero_matches_a_fresh_scheduler_even_with_milestone_one():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched, _ = create_scheduler_v2(opt, sched="multistep", num_epochs=2, decay_milestones=[1])
    fresh = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 123.0  # as loaded from a checkpoint
    sync_schedule(opt, sched, epoch=0, global_step=17, step_on_epochs=True)
    assert opt.param_groups[0]["lr"] == fresh == 0.05


# ----------------------------------------------------------------------------- recipe numbers


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "clip_grad", -1.0, r"train.clip_grad must be a finite number in \(0.0, inf\)"),
    ("train", "clip_grad", 0.0, "train.clip_grad"),
    ("optim", "weight_decay", -1e-4, r"optim.weight_decay must be a finite number in \[0.0, inf\)"),
    ("optim", "lr", float("nan"), "optim.lr"),
    ("optim", "lr", float("inf"), "optim.lr"),
    ("optim", "lr", 0.0, "optim.lr"),
    ("optim", "momentum", 1.0, r"optim.momentum .*\[0.0, 1.0\)"),
    ("optim", "momentum", -0.1, "optim.momentum"),
    ("schedule", "decay_rate", 0.0, "schedule.decay_rate"),
    ("schedule", "decay_rate", 1.5, "schedule.decay_rate"),
    ("schedule", "warmup_epochs", -1, "schedule.warmup_epochs"),
    ("schedule", "warmup_lr", -1.0, "schedule.warmup_lr"),
    ("schedule", "min_lr", 1.0, "schedule.min_lr .*at most optim.lr"),
    ("schedule", "decay_milestones", [3, 2], "schedule.decay_milestones must be increasing"),
    ("distill", "ce_weight", -1.0, "distill.ce_weight"),
    ("distill", "ce_weight", float("nan"), "distill.ce_weight"),
    ("distill", "ce_weight", 0.0, "loss would be constant"),
    ("train", "eval_batch_size", 0, "train.eval_batch_size"),
    ("train", "seed", -1, "train.seed"),
    ("data", "mean", [float("nan")] * 3, "data.mean must be finite"),
    ("paper", "published_top1", 101.0, "paper.published_top1"),
])
def test_bad_numbers_are_refused_naming_the_key(section, key, value, message):
    raw = {"name": "r", "data": {"source": "digits"}, "student": "cifar_resnet8", "distill": {"method": "none"}}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw)


def test_fp16_on_cpu_is_refused_bf16_is_not():
    with pytest.raises(RecipeError, match="fp16.*CPU.*train.mixed_precision=bf16"):
        validate_precision("fp16", "cpu")
    validate_precision("fp16", "cuda")
    validate_precision("bf16", "cpu")
    validate_precision(None, "cpu")


# ----------------------------------------------------------------------------- clear errors


def test_nan_logits_in_evaluation_name_the_model_instead_of_an_ece_overflow():
    logits = torch.randn(6, 4)
    logits[2] = float("nan")
    stats = per_sample_stats(logits, torch.zeros(6, dtype=torch.long))
    with pytest.raises(NonFiniteLogitsError, match="teacher cifar_resnet8 produced NaN/inf logits for 1 of 6"):
        summarise(stats, model_name="teacher cifar_resnet8")


def test_damaged_safetensors_names_the_file(tmp_path):
    good = tmp_path / "good.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(4, 4)}, good)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(ValueError, match=f"'{bad}' is not a readable safetensors file.*damaged or truncated"):
        load_weights(torch.nn.Linear(4, 4, bias=False), bad)


@pytest.mark.parametrize("content", [*(random.Random(seed).randbytes(3000) for seed in range(8)), b"",
                                     b"PK\x03\x04 truncated zip"])
def test_random_bytes_as_pth_say_damaged_not_trust(tmp_path, content):
    path = tmp_path / "teacher.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint") as err:
        load_weights(torch.nn.Linear(4, 4), path)
    assert "trust" not in str(err.value)


def test_head_mismatch_hint_names_recipe_keys_that_exist(tmp_path):
    import timm

    import vitkd  # noqa: F401  (registers the CIFAR models)

    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file(timm.create_model("cifar_resnet8", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=r"student.reset_head: true.*teacher.checkpoint"):
        load_weights(timm.create_model("cifar_resnet8", num_classes=10), path)
