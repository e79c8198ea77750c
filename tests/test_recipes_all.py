"""Every recipe under recipes/: valid, self-describing, consistent with the paper, and able to train.

Runnable recipes are the files not starting with ``_``; the ``_*.yaml`` bases are validated through
the recipes that extend them. The training step builds the recipe's student and teacher(s) without
weights (checkpoints are stripped: nothing is downloaded), at the dataset's class count, and runs one
optimiser step of the recipe's loss on random images; it runs once per distinct
(teacher(s), student, method, loss kwargs, heads, image size), the other recipes are only validated.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from timm.models import get_pretrained_cfg

import vitkd  # noqa: F401  (registers vitkd's models with timm)
from vitkd.data import DataInfo
from vitkd.engine.build import build_student, build_teacher
from vitkd.engine.factory import build_optimizer, build_task
from vitkd.recipe import ModelConfig, Recipe, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# recipes/bench/grid.yaml is the accuracy benchmark's tuning grid (recipe keys -> values), not a recipe
ALL_FILES = sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "grid.yaml")
RUNNABLE = [p for p in ALL_FILES if not p.name.startswith("_")]
BASES = [p for p in ALL_FILES if p.name.startswith("_")]

# class count of each data source a recipe may use; a recipe with a source missing here fails
NUM_CLASSES = {
    "uoft-cs/cifar100": 100,
    "ILSVRC/imagenet-1k": 1000,
    "zh-plus/tiny-imagenet": 200,
    "fashion_mnist": 10,
    "digits": 10,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def rel(path: Path) -> str:
    return str(path.relative_to(RECIPES))


@functools.cache
def recipe(path: Path) -> Recipe:
    return load_recipe(path)


@functools.cache
def chain(path: Path) -> tuple[tuple[Path, dict], ...]:
    """``path`` and every file it extends, child first, each with its YAML mapping as written (read
    here rather than through vitkd.recipe, to see what the files state, not the schema's defaults)."""
    raw = yaml.safe_load(path.read_text()) or {}
    parent = (path.parent / raw["extends"]).resolve() if "extends" in raw else None
    return ((path.resolve(), raw), *(chain(parent) if parent else ()))


def header(path: Path) -> str:
    """The comment block the file starts with."""
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))


def recipes_in(folder: str) -> dict[str, Recipe]:
    return {p.stem: recipe(p) for p in RUNNABLE if p.is_relative_to(RECIPES / folder)}


# ----------------------------------------------------------------------------- every file


@pytest.mark.parametrize("path", RUNNABLE, ids=rel)
def test_recipe_validates_and_states_how_it_runs(path):
    r = recipe(path)  # resolves extends and validates against the schema
    assert r.data.source in NUM_CLASSES, f"{rel(path)}: add {r.data.source!r} to NUM_CLASSES"
    stated = {key for _, raw in chain(path) for key in (raw.get("train") or {})}
    missing = {"batch_size", "gpus", "seed", "report"} - stated
    assert not missing, f"{rel(path)} leaves train.{sorted(missing)} to the schema's defaults: state them"


@pytest.mark.parametrize("path", RUNNABLE, ids=rel)
def test_header_names_paper_table_and_published_number(path):
    r, text = recipe(path), header(path)
    assert text, f"{rel(path)} must start with a comment naming its paper table/row and published top-1"
    if r.paper.table is None:  # not a paper experiment (e.g. the quickstart): it must say so
        assert r.paper.notes, f"{rel(path)}: no paper.table, so paper.notes must say what it is"
        return
    table = re.match(r"(Table \w+|Fig\. \w+)", r.paper.table).group(1)
    assert table in text, f"{rel(path)}: the header does not name {table!r}"
    published = r.paper.published_top1
    if published is None:
        assert re.search("no published", text, re.IGNORECASE), f"{rel(path)}: say it has no published number"
    else:
        assert f"{published:.2f}" in text, f"{rel(path)}: the header omits the published {published}"
    if r.distill.method != "none":
        assert r.train.report == "best", "the papers report the best epoch"


def test_every_base_is_extended_by_a_runnable_recipe():
    extended = {base for path in RUNNABLE for base, _ in chain(path)}
    assert [rel(b) for b in BASES if b.resolve() not in extended] == []


def test_readme_indexes_every_recipe():
    """Each recipe is linked from recipes/README.md, itself or (for non-paper sets) through its folder."""
    index = (RECIPES / "README.md").read_text()
    unlisted = [rel(p) for p in RUNNABLE if f"({rel(p)})" not in index and f"({rel(p.parent)}/)" not in index]
    assert unlisted == []


def test_run_names_are_unique():
    """Run folders are runs/<dataset>/{name}/seed{seed}: two recipes with one name would share them."""
    names = [recipe(p).name for p in RUNNABLE]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- one training step


def _step_key(path: Path) -> str:
    r = recipe(path)
    models = [(m.name, m.kwargs) for m in (*r.teachers, r.student)]
    setup = [r.distill.method, r.distill.kwargs, r.distill.heads, r.data.effective_image_size, r.data.source]
    return json.dumps([models, *setup], sort_keys=True)


STEP_RECIPES = list({_step_key(p): p for p in reversed(RUNNABLE)}.values())[::-1]  # first of each kind


def _data_info(num_classes: int, in_chans: int) -> DataInfo:
    """What the model builders read: class count and channels (the rest is for exports)."""
    names = [str(c) for c in range(num_classes)]
    return DataInfo(num_classes, names, 0, in_chans, (0.0,) * in_chans, (1.0,) * in_chans)


@functools.cache
def _teacher(names_and_kwargs: str, num_classes: int, in_chans: int):
    """The recipe's teacher(s) without weights; frozen, so one build serves every step that uses it."""
    configs = [ModelConfig(name, kwargs=kwargs) for name, kwargs in json.loads(names_and_kwargs)]
    return build_teacher(configs, _data_info(num_classes, in_chans))


def _random_batch(r: Recipe, num_classes: int, num_views: int):
    """Two random images (a (weak, strong) pair of them for two-view methods) and two labels."""
    generator = torch.Generator().manual_seed(0)
    shape = (2, r.data.in_chans, r.data.effective_image_size, r.data.effective_image_size)
    views = tuple(torch.randn(shape, generator=generator) for _ in range(num_views))
    return (views if num_views == 2 else views[0]), torch.tensor([0, num_classes - 1])


@pytest.mark.parametrize("path", STEP_RECIPES, ids=rel)
def test_one_training_step(path):
    torch.manual_seed(0)
    r = recipe(path)
    num_classes = NUM_CLASSES[r.data.source]
    for t in r.teachers:
        if t.checkpoint == "timm":  # timm's weights must exist, with the dataset's head
            cfg = get_pretrained_cfg(t.name)
            assert cfg is not None and cfg.has_weights and cfg.num_classes == num_classes, t.name
    student_cfg = dataclasses.replace(r.student, checkpoint=None)  # no weights: nothing to download
    student = build_student(student_cfg, _data_info(num_classes, r.data.in_chans))
    teachers = json.dumps([(t.name, t.kwargs) for t in r.teachers])
    teacher = _teacher(teachers, num_classes, r.data.in_chans) if r.teachers else None
    task = build_task(r, student, teacher)  # the engine's own wiring of recipe -> task and optimiser
    optimizer = build_optimizer(r, student)
    criterion = task.criterion
    images, targets = _random_batch(r, num_classes, getattr(criterion, "num_views", 1))
    before = [p.detach().clone() for p in student.parameters()]

    student.train()
    out = task(images, targets)
    out["loss"].backward()
    optimizer.step()

    assert torch.isfinite(out["loss"]), f"{rel(path)}: non-finite loss {out['loss']}"
    assert out["output"].shape == (2, num_classes)
    if criterion is not None:
        assert "kd" in out and torch.isfinite(out["kd"])
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters(), strict=True)), "no update"


# ----------------------------------------------------------------------------- paper coverage

TABLE1_METHODS = {"luminet", "kd", "dkd", "crld", "ls_kd"}
# docs/methods.md §1/§2 and the paper's Table 1, in its column order:
# pair -> (LumiNet alpha, T, CE weight, lr; published LumiNet, KD, DKD)
TABLE1 = {
    "resnet56-resnet20": (31, 4, 2, 0.05, 72.29, 70.66, 71.97),
    "resnet110-resnet32": (31, 4, 2, 0.05, 74.20, 73.08, 74.11),
    "resnet32x4-resnet8x4": (33, 4, 2, 0.05, 77.50, 73.33, 76.32),
    "wrn_40_2-wrn_16_2": (31, 4, 2, 0.05, 76.38, 74.92, 76.24),
    "wrn_40_2-wrn_40_1": (75, 8, 1, 0.05, 75.12, 73.54, 74.81),
    "vgg13-vgg8": (70, 8, 1, 0.05, 74.94, 72.98, 74.68),
    "resnet32x4-shufflev1": (31, 4, 2, 0.01, 76.66, 74.07, 76.45),
    "wrn_40_2-shufflev1": (35, 4, 1, 0.01, 76.95, 74.83, 76.70),
    "vgg13-mobilenetv2": (70, 8, 2, 0.01, 70.50, 67.37, 69.71),
    "resnet50-mobilenetv2": (70, 8, 2, 0.01, 70.97, 67.35, 70.35),
    "resnet32x4-shufflev2": (31, 4, 2, 0.01, 77.55, 74.45, 77.07),
}


def test_table1_has_every_pair_and_method_at_the_authors_settings():
    table1 = recipes_in("cifar100/table1")
    assert set(table1) == {f"{pair}_{method}" for pair in TABLE1 for method in TABLE1_METHODS}  # 55
    for pair, (alpha, temperature, ce, lr, lumi, kd, dkd) in TABLE1.items():
        runs = {m: table1[f"{pair}_{m}"] for m in TABLE1_METHODS}
        assert {m: r.distill.method for m, r in runs.items()} == {m: m for m in TABLE1_METHODS}
        assert len({(r.teachers[0].name, r.student.name, r.optim.lr) for r in runs.values()}) == 1
        luminet = runs["luminet"]
        assert luminet.distill.kwargs == {"alpha": alpha, "temperature": temperature}
        assert luminet.optim.lr == lr
        assert (luminet.distill.ce_weight, luminet.distill.warmup_epochs) == (ce, 20)
        assert [runs[m].paper.published_top1 for m in ("luminet", "kd", "dkd")] == [lumi, kd, dkd]
        assert runs["crld"].data.two_view and runs["crld"].distill.warmup_epochs == 0
        assert runs["dkd"].distill.warmup_epochs == 20
        assert (runs["kd"].distill.ce_weight, runs["kd"].distill.kd_weight) == (0.1, 0.9)
        assert runs["ls_kd"].distill.ce_weight == 0.1  # T and KD weight per pair: test_recipes_protocol.py
        for r in runs.values():
            assert (r.train.batch_size, r.train.epochs, r.train.gpus) == (64, 240, 1)
            assert r.schedule.decay_milestones == [151, 181, 211] and r.optim.weight_decay == 5e-4


def test_table2_imagenet_global_batches_and_schedule():
    table2 = recipes_in("imagenet/table2")
    assert len(table2) == 4
    for stem, r in table2.items():
        global_batch = r.train.batch_size * r.train.gpus * r.train.grad_accum_steps
        expected = (512, 0.2) if stem.startswith("resnet34-resnet18") else (256, 0.1)
        assert (global_batch, r.optim.lr) == expected, stem
        assert r.data.transform == "imagenet" and r.train.epochs == 100
        assert r.schedule.decay_milestones == [31, 61, 91] and r.optim.weight_decay == 1e-4


def test_table5_table6_ablations_and_teachers_are_all_there():
    table5 = recipes_in("cifar100/table5")
    assert len(table5) == 5
    assert all(r.data.transform == "autoaugment" and r.paper.published_top1 for r in table5.values())
    table6 = recipes_in("cifar100/table6")
    assert sorted(r.paper.published_top1 for r in table6.values()) == [65.46, 67.38, 68.42]
    assert {r.distill.method for r in table6.values()} == {"none", "kd", "luminet"}
    deit = recipe(RECIPES / "deit_s_to_tiny_distilled.yaml")
    assert deit.distill.heads == "split" and deit.student.name == "deit_tiny_distilled_patch16_224"
    ablations = "cifar100/ablations/"
    batches = {r.train.batch_size for r in recipes_in(ablations + "batch_size").values()}
    temperatures = {r.distill.kwargs["temperature"] for r in recipes_in(ablations + "temperature").values()}
    assert batches == {32, 64, 128, 256} and temperatures == set(range(1, 9))
    (ensemble,) = recipes_in(ablations + "ensemble").values()
    assert [t.name for t in ensemble.teachers] == ["cifar_resnet8x4", "cifar_wrn_40_2"]
    assert ensemble.paper.published_top1 == 76.52
    teacher_recipes = recipes_in("cifar100/teachers").values()
    assert all(r.distill.method == "none" and r.teacher is None for r in teacher_recipes)
    teachers = {r.student.name for r in teacher_recipes}
    cnn_teachers = ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "resnet50")
    assert teachers >= {f"cifar_{name}" for name in cnn_teachers}
    assert "vitkd_deit_small_patch4_32" in teachers


TEACHER_PATH = re.compile(r"cifar_teachers/(\w+)/ckpt_epoch_240\.pth$|runs/cifar100/(\w+)/seed\d+/student$")


def test_teacher_checkpoints_come_from_a_teacher_recipe_of_the_same_architecture():
    """A released teacher <x>/ckpt_epoch_240.pth, or a run export runs/cifar100/<x>/seed0/student,
    names the teacher recipe <x>.yaml, which trains exactly that architecture."""
    teacher_recipes = recipes_in("cifar100/teachers")
    for path in RUNNABLE:
        for t in recipe(path).teachers:
            match = TEACHER_PATH.search(t.checkpoint or "")
            if match is None:
                continue
            stem = match.group(1) or match.group(2)
            assert stem in teacher_recipes, f"{rel(path)}: no teacher recipe for {t.checkpoint}"
            assert teacher_recipes[stem].student.name == t.name, f"{rel(path)}: {t.checkpoint} is no {t.name}"
