"""timm's training stack in the engine: Mixup/CutMix before the task, EMA student, channels_last, gradient
checkpointing, layer-wise lr decay and compile, on digits with tiny models."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vitkd.engine import train
from vitkd.engine.checkpoint import TrainState
from vitkd.engine.factory import build_optimizer, build_parts
from vitkd.engine.trainer import Trainer, make_accelerator
from vitkd.recipe import recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def make_recipe(out, **sections):
    raw = {
        "name": "options",
        "data": {"source": "digits", "transform": "none", "image_size": 16, "num_workers": 0,
                 "persistent_workers": False, "max_eval_samples": 64},
        "teacher": {"name": "cifar_resnet8"},
        "student": "cifar_resnet8",
        "distill": {"method": "kd", "kwargs": {"temperature": 4.0}},
        "optim": {"lr": 0.05},
        "schedule": {"sched": "cosine"},
        "train": {"epochs": 1, "batch_size": 16, "output_dir": str(out), "checkpoint_every": 0, "log_every": 5,
                  "cpu": True},
    }
    for section, values in sections.items():
        mergeable = isinstance(values, dict) and isinstance(raw.get(section), dict)
        raw[section] = {**raw[section], **values} if mergeable else values
    return recipe_from_dict(raw)


def test_mixup_feeds_teacher_and_student_the_same_mixed_images_and_soft_targets(tmp_path):
    recipe = make_recipe(tmp_path, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1})
    accelerator = make_accelerator(recipe.train, tmp_path)
    torch.manual_seed(0)
    parts = build_parts(recipe).prepare(recipe, accelerator)
    trainer = Trainer(recipe, accelerator, parts, TrainState(), tmp_path)
    seen = {}
    parts.teacher.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", args[0].clone()))
    parts.student.register_forward_pre_hook(lambda m, args: seen.__setitem__("student", args[0].clone()))
    task, targets_seen = parts.task, []

    def spy(images, targets, *rest):  # what the step hands the task
        targets_seen.append(targets)
        return task(images, targets, *rest)

    parts.task = spy
    images, labels, indices = next(iter(parts.train_loader))
    original = images.clone()
    out = trainer.step((images, labels, indices))
    assert torch.equal(seen["teacher"], seen["student"])  # the teacher sees the mixed images
    assert not torch.equal(seen["student"], original)
    (targets,) = targets_seen
    assert targets.shape == (16, 10) and torch.allclose(targets.sum(1), torch.ones(16))
    assert targets.min() >= 0.1 / 10 - 1e-6  # smoothed: every class keeps at least eps / C
    assert torch.isfinite(out["loss"]) and set(out) >= {"ce", "kd", "loss"}


def test_ema_channels_last_checkpointing_run_evaluates_and_exports_the_ema_student(tmp_path):
    recipe = make_recipe(tmp_path / "run", train={"model_ema": {"decay": 0.5}, "report": "ema", "channels_last": True,
                                                   "grad_checkpointing": True, "label_smoothing": 0.1,
                                                   "max_steps": 6, "log_every": 3})
    summary = train(recipe)
    run = tmp_path / "run"
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["report"] == "ema" and summary["ema"]["top1"] == record["ema_top1"]
    assert summary["ema"]["samples"] == 64
    ema = load_file(str(run / "student_ema" / "model.safetensors"))
    last = load_file(str(run / "student" / "model.safetensors"))
    assert ema.keys() == last.keys()
    assert any(not torch.equal(ema[k], last[k]) for k in ema)  # an average, not the last weights
    assert json.loads((run / "student_ema" / "config.json").read_text())["architecture"] == "cifar_resnet8"


def test_ema_student_resumes_bit_identical(tmp_path, assert_same_export):
    """The EMA weights travel in the checkpoint: an interrupted and resumed run ends with the same EMA."""
    options = {"model_ema": {"decay": 0.9}, "report": "ema", "epochs": 2, "checkpoint_every": 1}
    train(make_recipe(tmp_path / "full", teacher=None, distill={"method": "none", "kwargs": {}}, train=options))
    split = make_recipe(tmp_path / "split", teacher=None, distill={"method": "none", "kwargs": {}},
                        train={**options, "max_steps": 40})  # stops inside epoch 1 (digits: 90 batches of 16)
    train(split)
    assert (next((tmp_path / "split" / "checkpoints").glob("step_*")) / "ema.safetensors").is_file()
    split.train.max_steps = None
    train(split, resume="auto")
    assert_same_export(tmp_path / "full", tmp_path / "split", "student_ema")


def test_layer_decay_scales_lr_per_layer_group(tmp_path):
    vit = {"name": "vitkd_deit_nano_patch4_32", "kwargs": {"img_size": 16, "depth": 2}}
    recipe = make_recipe(tmp_path, student=vit, teacher=None, distill={"method": "none", "kwargs": {}},
                         optim={"opt": "adamw", "lr": 1e-3, "layer_decay": 0.5, "filter_bias_and_bn": True})
    model = build_parts(recipe).student
    optimizer = build_optimizer(recipe, model)
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert scales == [0.125, 0.25, 0.5, 1.0]  # embeddings, block 0, block 1, head: 0.5 per layer down


def test_compile_asks_accelerate_for_inductor(tmp_path):
    from accelerate.utils import DynamoBackend

    recipe = make_recipe(tmp_path, train={"compile": True})
    assert make_accelerator(recipe.train, tmp_path).state.dynamo_plugin.backend == DynamoBackend.INDUCTOR
    recipe = make_recipe(tmp_path)
    assert make_accelerator(recipe.train, tmp_path).state.dynamo_plugin.backend == DynamoBackend.NO
