"""Preflight: every problem of a recipe at once, with its fix, before any image is read."""

import resource
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch

import vitkd  # noqa: F401  (registers the CIFAR zoo with timm)
from vitkd.preflight import PreflightError, check_runnable, inspect_recipe, preflight
from vitkd.recipe import RecipeError, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]


def recipe(**sections):
    raw = {"name": "t", "data": {"source": "digits", "transform": "none", "image_size": 16, "num_workers": 0},
           "student": "cifar_resnet8", "distill": {"method": "none"}, "train": {"epochs": 2, "batch_size": 16}}
    raw.update(sections)
    return recipe_from_dict(raw)


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """No network and an empty Hugging Face Hub cache (models and datasets live there)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_runnable_recipe_has_no_problems():
    assert preflight(recipe()) == []


def test_unknown_model_name_suggests_the_closest_registered_names():
    problems = preflight(recipe(student="cifar_resnet9"))
    assert len(problems) == 1
    assert "student.name: 'cifar_resnet9'" in problems[0] and "'cifar_resnet8'" in problems[0]


def test_bad_constructor_kwargs_name_the_key(tmp_path):
    # a student is built on the meta device already when the recipe is validated (it tells its head layout)
    with pytest.raises(RecipeError, match=r"student.kwargs \{'widht': 2\} do not build 'cifar_resnet8'"):
        recipe(student={"name": "cifar_resnet8", "kwargs": {"widht": 2}})
    teacher = {"name": "cifar_resnet8", "kwargs": {"widht": 2}, "checkpoint": str(tmp_path / "t.safetensors")}
    problems = preflight(recipe(teacher=teacher, distill={"method": "kd"}))
    assert any(p.startswith("teacher.kwargs {'widht': 2}") and "widht" in p for p in problems), problems


def test_images_the_model_cannot_take_are_a_problem():
    problems = preflight(recipe(student="vitkd_deit_nano_patch4_32"))  # a 32-px ViT on 16-px data
    assert len(problems) == 1 and "cannot take 3x16x16 images" in problems[0]
    assert "student.kwargs.img_size: 16" in problems[0]
    assert preflight(recipe(student={"name": "vitkd_deit_nano_patch4_32", "kwargs": {"img_size": 16}})) == []


def test_every_problem_is_reported_at_once(tmp_path, offline_empty_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    bad = recipe(
        data={"source": str(tmp_path / "no_such_folder")},
        student="cifar_resnet9",
        teacher={"name": "cifar_resnet20", "checkpoint": str(tmp_path / "teacher.pth")},
        distill={"method": "kd"},
        hub={"push": True, "repo_id": "me/student"},
    )
    problems = preflight(bad)
    assert [p.split(":")[0].split(" ")[0] for p in problems] == [
        "data.source", "student.name", "teacher.checkpoint", "hub.push"]
    with pytest.raises(PreflightError) as err:
        check_runnable(bad)
    assert err.value.problems == problems and "4 problem(s)" in str(err.value)


def test_a_checkpoint_that_does_not_fit_is_found_without_loading_data(tmp_path):
    torch.save(timm.create_model("cifar_resnet20", num_classes=10).state_dict(), tmp_path / "t.pth")
    wrong_arch = recipe(teacher={"name": "cifar_resnet8", "checkpoint": str(tmp_path / "t.pth")},
                        distill={"method": "kd"})
    (problem,) = preflight(wrong_arch)
    assert problem.startswith("teacher.checkpoint: checkpoint") and "missing from the checkpoint" not in problem
    assert "not in the model" in problem
    wrong_head = recipe(teacher={"name": "cifar_resnet20", "checkpoint": str(tmp_path / "t.pth")},
                        distill={"method": "kd"})
    assert preflight(wrong_head) == []  # class count unknown: the head is not compared
    (problem,) = inspect_recipe(wrong_head, num_classes=100).problems
    assert "checkpoint head 'fc' has 10 classes, model has 100" in problem and "reset_head" in problem


def test_a_random_teacher_is_a_note_not_a_problem():
    report = inspect_recipe(recipe(teacher="cifar_resnet20", distill={"method": "kd"}))
    assert report.problems == [] and "weights are random" in report.notes[0]


def test_timm_weights_missing_offline_say_how_to_fetch_them(offline_empty_cache):
    teacher = recipe(teacher={"name": "resnet18.a1_in1k", "checkpoint": "timm"}, distill={"method": "kd"},
                     data={"source": "digits", "image_size": 32, "num_workers": 0})
    (problem,) = preflight(teacher)
    assert "timm/resnet18.a1_in1k" in problem and str(offline_empty_cache) in problem
    assert "`hf download timm/resnet18.a1_in1k`" in problem and "HF_HOME" in problem
    assert "teacher.checkpoint to a local" in problem


def test_timm_weights_in_the_local_cache_pass_offline(offline_empty_cache):
    # the cache layout huggingface_hub writes: refs/main names the snapshot holding the files
    repo = offline_empty_cache / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "model.safetensors").write_bytes(b"")
    teacher = recipe(teacher={"name": "resnet18.a1_in1k", "checkpoint": "timm"}, distill={"method": "kd"},
                     data={"source": "digits", "image_size": 32, "num_workers": 0})
    assert preflight(teacher) == []


def test_a_hub_dataset_not_in_the_cache_is_named_offline(offline_empty_cache):
    (problem,) = preflight(recipe(data={"source": "uoft-cs/cifar100"}))
    assert problem.startswith("data.source: Cannot load dataset 'uoft-cs/cifar100'")
    assert "offline mode is on" in problem and "load_splits('uoft-cs/cifar100'" in problem


def test_script_fails_fast_with_a_did_you_mean_and_no_traceback():
    """The issue's check: a misspelt student fails before any data is read, imports included, in under 15 s
    of CPU time (wall time on a quiet machine is about the same; a shared CI machine's wall time is not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "scripts/distill.py", "--recipe", "recipes/quickstart.yaml", "--set",
         "student.name=cifar_resnet9", "--set", "train.output_dir=/nonexistent/never-written"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "student.name: 'cifar_resnet9'" in done.stderr and "Did you mean 'cifar_resnet8'" in done.stderr
    assert cpu_s < 15, cpu_s
