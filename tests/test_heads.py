"""Two-head (DeiT-distilled) students: every heads/method combination trains what evaluation reports, or
the recipe is refused before anything is built."""

import itertools

import pytest
import torch

from vitkd.data import DataInfo
from vitkd.engine.build import build_criterion, build_student
from vitkd.engine.task import DistillationTask
from vitkd.recipe import RecipeError, recipe_from_dict

TINY_VIT = {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
STUDENTS = {
    "two_heads": {"name": "deit_tiny_distilled_patch16_224", "kwargs": TINY_VIT},
    "one_head": {"name": "deit_tiny_patch16_224", "kwargs": TINY_VIT},
}
METHODS = {"none": {}, "kd": {"temperature": 4.0}, "crld": {}}
INFO = DataInfo(5, [str(c) for c in range(5)], 16, 3, (0.0,) * 3, (1.0,) * 3)


def make_recipe(student, heads, method):
    return recipe_from_dict({
        "name": "heads",
        "data": {"source": "digits", "transform": "none", "image_size": 16, "two_view": method == "crld"},
        "teacher": None if method == "none" else {"name": "cifar_resnet8"},
        "student": STUDENTS[student],
        "distill": {"method": method, "kwargs": METHODS[method], "heads": heads},
        "train": {"batch_size": 4},
    })


def head_gradients(recipe):
    """One training step of the recipe's student; returns {head name: gradient norm}, and checks that the
    task's metric logits are what the student outputs in evaluation."""
    torch.manual_seed(0)
    student = build_student(recipe.student, INFO)
    teacher = torch.nn.Linear(3 * 16 * 16, 5).requires_grad_(False)
    criterion = build_criterion(recipe.distill)
    task = DistillationTask(student, None if criterion is None else lambda x: teacher(x.flatten(1)), criterion,
                            heads=recipe.distill.heads)
    images = torch.randn(4, 3, 16, 16)
    views = (images, images.flip(-1)) if recipe.data.two_view else images
    out = task(views, torch.tensor([0, 1, 2, 4]))
    out["loss"].backward()
    student.eval()
    assert torch.allclose(out["output"], student(images), atol=1e-5)  # metrics = evaluated model
    heads = ("head", "head_dist") if hasattr(student, "head_dist") else ("head",)
    return {h: getattr(student, h).weight.grad.norm().item() for h in heads}


@pytest.mark.parametrize(("student", "heads", "method"), list(itertools.product(STUDENTS, ("cls", "split"), METHODS)))
def test_every_combination_trains_what_it_evaluates_or_is_refused(student, heads, method):
    refused = (
        (heads == "split" and student == "one_head", "no distillation head"),
        (heads == "split" and method == "none", "nothing to put on the distillation head"),
        (student == "two_heads" and heads == "cls" and method != "none", "set distill.heads: split"),
    )
    reasons = [message for condition, message in refused if condition]
    if reasons:
        with pytest.raises(RecipeError, match=reasons[0]):
            make_recipe(student, heads, method)
        return
    gradients = head_gradients(make_recipe(student, heads, method))
    assert all(norm > 0 for norm in gradients.values()), gradients  # every evaluated head learns


def test_model_traits_come_from_a_weightless_build():
    from vitkd.models.traits import model_traits

    assert model_traits("deit_tiny_distilled_patch16_224").two_heads
    assert not model_traits("cifar_resnet8").two_heads
    assert model_traits("hf-hub:someone/model") is None  # unknown without the network: the task checks
    with pytest.raises(RecipeError, match="do not build"):
        recipe_from_dict({"name": "x", "data": {"source": "digits"}, "student": {"name": "cifar_resnet8",
                          "kwargs": {"no_such_arg": 1}}, "distill": {"method": "none"}})
