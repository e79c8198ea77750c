"""``scripts/distill.py --plan``: what a recipe will do, checked, without training; and that runs do it."""

import json
from pathlib import Path

import huggingface_hub
import pytest

from vitkd.commands import distill  # what scripts/distill.py and `vitkd distill` run
from vitkd.data import build_loaders
from vitkd.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]

# Small and fast: the quickstart recipes on 20 % of scikit-learn's digits, evaluated on 64 images.
FAST = ["data.source=digits", "data.num_workers=0", "data.persistent_workers=false", "data.train_fraction=0.2",
        "data.max_eval_samples=64", "train.batch_size=32", "train.cpu=true", "train.checkpoint_every=0"]


def plan_json(capsys, recipe, *overrides):
    """(exit status, JSON plan) of ``scripts/distill.py --recipe recipe --set ... --plan --json``."""
    status = distill.main(["--recipe", str(recipe), *[a for o in overrides for a in ("--set", o)], "--plan", "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_cifar_recipe_plan_offline_without_the_dataset(capsys, tmp_path, monkeypatch):
    """The issue's check: plain momentum SGD, the authors' step function, and the missing dataset named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    status, plan = plan_json(capsys, ROOT / "recipes/cifar100/table1/resnet32x4-resnet8x4_luminet.yaml")
    assert status == 1
    assert plan["optimizer"]["name"] == "SGD" and plan["optimizer"]["nesterov"] is False
    assert plan["optimizer"]["momentum"] == 0.9 and plan["optimizer"]["weight_decay"] == 5e-4
    lrs = plan["lr_per_epoch"]
    assert len(lrs) == 240
    for epoch_index, lr in ((149, 0.05), (150, 0.005), (180, 0.0005), (210, 5e-05)):
        assert lrs[epoch_index] == pytest.approx(lr, abs=1e-12)
    assert plan["loss"] == {"name": "luminet", "kwargs": {"alpha": 33.0, "temperature": 4.0}, "ce_weight": 2.0,
                            "kd_weight": 1.0, "warmup_epochs": 20, "heads": "cls"}
    assert plan["kd_ramp_per_epoch"][:2] == [0.05, 0.1] and plan["kd_ramp_per_epoch"][19:] == [1.0] * 221
    assert any(p.startswith("data.source: Cannot load dataset 'uoft-cs/cifar100'") for p in plan["problems"])
    assert "num_classes" not in plan["data"]  # not opened: nothing was downloaded


def test_plan_counts_batches_as_the_loaders_and_accelerate_shard_them(capsys):
    recipe = ROOT / "recipes/quickstart_student_alone.yaml"
    status, plan = plan_json(capsys, recipe, *FAST)
    assert status == 0 and plan["problems"] == []
    train_loader, eval_loader, info = build_loaders(load_recipe(recipe, FAST).data, batch_size=32)
    assert plan["data"]["num_classes"] == info.num_classes == 10
    assert plan["data"]["train_samples"] == len(train_loader.dataset)
    assert plan["data"]["eval_samples"] == len(eval_loader.dataset) == 64
    assert plan["data"]["batches_per_epoch"] == plan["data"]["updates_per_epoch"] == len(train_loader)
    _, two = plan_json(capsys, recipe, *FAST, "train.gpus=2", "train.grad_accum_steps=3")
    per_process = len(train_loader) // 2 + (len(train_loader) % 2 > 0)  # Accelerate evens out the shards
    assert two["data"]["batches_per_epoch"] == per_process
    assert two["data"]["updates_per_epoch"] == -(-per_process // 3)
    assert two["global_batch"] == 32 * 2 * 3


def test_text_plan_and_exit_status(capsys, tmp_path):
    recipe = ROOT / "recipes/quickstart.yaml"
    status = distill.main(["--recipe", str(recipe), "--plan", "--set", "teacher.checkpoint=" + str(tmp_path / "no.pth"),
                           *[a for o in FAST for a in ("--set", o)]])
    text = capsys.readouterr().out
    assert status == 1
    for expected in ("student: cifar_resnet8, 0.08 M parameters", "optimiser: SGD", "nesterov", "lr in each epoch",
                     "ramp", "global batch 32", "problems (1):", "teacher.checkpoint"):
        assert expected in text, expected
    with pytest.raises(SystemExit):
        distill.main(["--recipe", str(recipe), "--json"])


@pytest.mark.parametrize("schedule", [
    ["schedule.sched=multistep", "schedule.decay_milestones=[2]"],
    ["schedule.sched=cosine", "schedule.warmup_epochs=1", "schedule.warmup_lr=0.01", "schedule.step_on_epochs=false"],
], ids=["multistep", "cosine_per_update"])
def test_metrics_lr_of_each_epoch_is_the_plans(capsys, tmp_path, schedule):
    """Issue 18's check: line k of metrics.jsonl shows the lr that --plan lists for epoch k."""
    recipe = ROOT / "recipes/quickstart_student_alone.yaml"
    overrides = [*FAST, *schedule, "train.epochs=3", f"train.output_dir={tmp_path / 'run'}"]
    _, plan = plan_json(capsys, recipe, *overrides)
    assert distill.main(["--recipe", str(recipe), *[a for o in overrides for a in ("--set", o)]]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == pytest.approx(plan["lr_per_epoch"], rel=1e-12)
    if plan["lr_first_last_per_epoch"] is None:
        assert plan["lr_per_epoch"] == pytest.approx([0.05, 0.005, 0.005])  # timm decays from epoch 2
    else:
        first_last = [lr for pair in plan["lr_first_last_per_epoch"] for lr in pair]
        assert [lr for r in records for lr in (r["lr"], r["lr_last"])] == pytest.approx(first_last, rel=1e-12)
        assert len({r["lr"] for r in records}) == 3
