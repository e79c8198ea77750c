"""Training from a streamed split (``data.streaming: true``): fixed-length epochs, learning, bit-identical
resume inside an epoch, one run over two processes with the stream split between them (digits, 16 px,
cifar_resnet8, CPU)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from vitkd.engine import train
from vitkd.recipe import RecipeError, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_stream_shutdown_pause(monkeypatch):
    """datasets pauses 5 s whenever some streams end (for remote readers' threads); not needed locally."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def recipe_dict(out, **train_options) -> dict:
    return {
        "name": "streaming",
        "data": {"source": "digits", "streaming": True, "train_split": "train[:320]", "transform": "none",
                 "image_size": 16, "in_chans": 1, "num_workers": 0, "persistent_workers": False,
                 "max_eval_samples": 200},
        "student": "cifar_resnet8",
        "distill": {"method": "none"},
        "optim": {"lr": 0.1},
        "schedule": {"sched": "cosine"},
        "train": {"epochs": 3, "batch_size": 32, "output_dir": str(out), "checkpoint_every": 0, "log_every": 5,
                  "cpu": True, **train_options},
    }


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_streamed_split_trains_in_epochs_of_its_declared_length(tmp_path):
    summary = train(recipe_from_dict(recipe_dict(tmp_path / "run")))
    assert [(r["epoch"], r["step"]) for r in records(tmp_path / "run")] == [(1, 10), (2, 20), (3, 30)]  # 320 / 32
    assert summary["last"]["top1"] > 50  # learning: 10 classes, chance is 10 %
    assert records(tmp_path / "run")[-1]["train_loss"] < records(tmp_path / "run")[0]["train_loss"]


def test_a_streamed_run_resumed_inside_an_epoch_ends_bit_identical(tmp_path, assert_same_export):
    train(recipe_from_dict(recipe_dict(tmp_path / "full", epochs=2)))
    split = recipe_from_dict(recipe_dict(tmp_path / "split", epochs=2, max_steps=14))  # 4 batches into epoch 2
    train(split)
    split.train.max_steps = None
    train(split, resume="auto")
    assert_same_export(tmp_path / "full", tmp_path / "split")


def test_gradient_accumulation_keeps_whole_windows_per_streamed_epoch(tmp_path):
    train(recipe_from_dict(recipe_dict(tmp_path / "run", epochs=2, grad_accum_steps=3)))
    assert [r["step"] for r in records(tmp_path / "run")] == [3, 6]  # 10 batches → 9 → 3 updates per epoch


def test_two_processes_split_the_stream_and_stay_in_step(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", epochs=2)))
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:  # a free port: a fixed one may be taken by another job on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port),
                           str(REPO / "scripts" / "distill.py"), "--recipe", str(path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["hardware"]["num_processes"] == 2 and info["hardware"]["global_batch"] == 64
    assert [r["step"] for r in records(tmp_path / "run")] == [5, 10]  # 320 rows / (2 processes × 32)


def test_a_teacher_cache_cannot_feed_a_streamed_run(tmp_path):
    raw = recipe_dict(tmp_path / "run")
    raw |= {"teacher": {"name": "cifar_resnet8", "cache": str(tmp_path / "cache")}, "distill": {"method": "kd"}}
    with pytest.raises(RecipeError, match="teacher.cache with data.streaming"):
        recipe_from_dict(raw)
