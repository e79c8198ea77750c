"""A teacher gets the inputs it was trained on (re-normalised, resized), and reset_head fine-tunes to new classes."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F

import vitkd  # noqa: F401  (registers the CIFAR zoo with timm)
from vitkd.data import DataInfo
from vitkd.engine import train
from vitkd.engine.build import build_student
from vitkd.export import write_export
from vitkd.models import CheckpointMismatchError, adapt_teacher, create_student, create_teacher
from vitkd.models.teacher import InputSpec, TeacherInput, teacher_input_record
from vitkd.recipe import ModelConfig, RecipeError, recipe_from_dict

CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
TEST_RESNET = "test_resnet.r160_in1k"  # timm's tiny test model: pretrained cfg 160 px, mean/std 0.5, 1000 classes


def data_info(size=32, mean=CIFAR_MEAN, std=CIFAR_STD, classes=10):
    return DataInfo(classes, [str(i) for i in range(classes)], size, len(mean), mean, std)


def normalise(pixels, mean, std):
    return (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.fixture
def exported_teacher(tmp_path):
    """A cifar_resnet8 exported (by the real writer) as trained on 32-px images normalised with mean/std 0.5/0.25."""
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet8", num_classes=10)
    return model, write_export(model, tmp_path / "teacher", architecture="cifar_resnet8", num_classes=10,
                               data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3})


def test_renormalisation_is_the_exact_affine_map():
    data = InputSpec(CIFAR_MEAN, CIFAR_STD, 32)
    teacher = InputSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 32)
    wrapper = TeacherInput(torch.nn.Identity(), data, teacher)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = wrapper(normalise(pixels, data.mean, data.std))
    torch.testing.assert_close(out, normalise(pixels, teacher.mean, teacher.std), atol=1e-6, rtol=0)
    assert out.shape == pixels.shape and not wrapper.resizes


def test_resizing_keeps_a_flat_image_flat_at_the_teachers_size_and_normalisation():
    wrapper = TeacherInput(torch.nn.Identity(), InputSpec(CIFAR_MEAN, CIFAR_STD, 16),
                           InputSpec((0.5,) * 3, (0.25,) * 3, 48, "bicubic"))
    pixels = torch.full((2, 3, 16, 16), 0.75)
    out = wrapper(normalise(pixels, CIFAR_MEAN, CIFAR_STD))
    assert out.shape == (2, 3, 48, 48)
    torch.testing.assert_close(out, torch.full_like(out, (0.75 - 0.5) / 0.25), atol=1e-5, rtol=0)
    # bicubic overshoot at a sharp edge is clipped to valid pixels, as an 8-bit image resize would
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0
    out = wrapper(normalise(edge, CIFAR_MEAN, CIFAR_STD))
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-6 and out.max() <= (1 - 0.5) / 0.25 + 1e-6


def test_a_teacher_with_other_statistics_gets_what_it_was_trained_on(exported_teacher):
    source, folder = exported_teacher
    teacher = adapt_teacher(create_teacher("cifar_resnet8", num_classes=10, checkpoint=folder), data_info(), folder)
    assert isinstance(teacher, TeacherInput)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        seen_by_teacher = source.eval()(normalise(pixels, (0.5,) * 3, (0.25,) * 3))
        torch.testing.assert_close(teacher(normalise(pixels, CIFAR_MEAN, CIFAR_STD)), seen_by_teacher,
                                   atol=1e-4, rtol=1e-4)
    (record,) = teacher_input_record(teacher)
    assert record["adapted"] and record["teacher"]["mean"] == (0.5,) * 3 and record["data"]["mean"] == CIFAR_MEAN


def test_a_timm_pretrained_teacher_is_resized_and_renormalised(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model(TEST_RESNET).state_dict(), weights)
    teacher = create_teacher(TEST_RESNET, num_classes=1000, checkpoint="timm",
                             pretrained_cfg_overlay={"file": str(weights)})  # timm's pretrained path, offline
    adapted = adapt_teacher(teacher, data_info(size=32, classes=1000), "timm")
    assert isinstance(adapted, TeacherInput) and adapted.teacher_spec == InputSpec((0.5,) * 3, (0.5,) * 3, 160)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected_input = normalise(F.interpolate(pixels, size=(160, 160), mode="bilinear", align_corners=False)
                               .clamp(0, 1), (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        torch.testing.assert_close(adapted(normalise(pixels, CIFAR_MEAN, CIFAR_STD)), teacher(expected_input),
                                   atol=1e-4, rtol=1e-4)


def test_unknown_or_equal_preprocessing_leaves_the_teacher_as_it_is(tmp_path, exported_teacher):
    source, folder = exported_teacher
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    bare = create_teacher("cifar_resnet8", num_classes=10, checkpoint=tmp_path / "bare.pth")
    assert adapt_teacher(bare, data_info(), tmp_path / "bare.pth") is bare  # a bare file records no preprocessing
    same = create_teacher("cifar_resnet8", num_classes=10, checkpoint=folder)
    assert adapt_teacher(same, data_info(mean=(0.5,) * 3, std=(0.25,) * 3), folder) is same
    assert teacher_input_record(same) == [{"adapted": False, "reason": teacher_input_record(bare)[0]["reason"]}]


def test_the_wrapper_stays_frozen_and_adds_no_state(exported_teacher):
    _, folder = exported_teacher
    raw = create_teacher("cifar_resnet8", num_classes=10, checkpoint=folder)
    wrapper = adapt_teacher(raw, data_info(), folder)
    parent = torch.nn.Sequential(wrapper)
    parent.train()
    assert not any(m.training for m in wrapper.modules())
    assert not any(p.requires_grad for p in wrapper.parameters())
    assert set(wrapper.state_dict()) == {f"teacher.{k}" for k in raw.state_dict()}


def test_a_run_records_the_teacher_input(tmp_path, exported_teacher):
    _, folder = exported_teacher
    recipe = recipe_from_dict({
        "name": "t", "data": {"source": "digits", "transform": "none", "image_size": 16, "num_workers": 0,
                              "persistent_workers": False, "max_eval_samples": 32},
        "student": "cifar_resnet8", "teacher": {"name": "cifar_resnet8", "checkpoint": str(folder)},
        "distill": {"method": "kd"},
        "train": {"epochs": 1, "max_steps": 1, "batch_size": 16, "output_dir": str(tmp_path / "run"), "cpu": True},
    })
    train(recipe)
    (record,) = json.loads((tmp_path / "run" / "run_info.json").read_text())["teacher_input"]
    assert record["adapted"] and record["resized"] and record["teacher"]["image_size"] == 32
    assert record["data"]["image_size"] == 16


# ----------------------------------------------------------------------------- reset_head


def test_reset_head_loads_all_but_the_classifier(tmp_path):
    source = timm.create_model("cifar_resnet8", num_classes=100)
    torch.save(source.state_dict(), tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointMismatchError, match="set student.reset_head: true"):
        create_student("cifar_resnet8", num_classes=10, checkpoint=tmp_path / "ckpt.pth")
    student = build_student(ModelConfig("cifar_resnet8", checkpoint=str(tmp_path / "ckpt.pth"), reset_head=True),
                            data_info(classes=10))
    assert torch.equal(student.conv1.weight, source.conv1.weight) and student.fc.out_features == 10


def test_reset_head_on_timm_weights_starts_a_new_head_even_for_the_same_classes(tmp_path):
    weights = tmp_path / "w.pth"
    source = timm.create_model(TEST_RESNET)
    torch.save(source.state_dict(), weights)
    overlay = {"pretrained_cfg_overlay": {"file": str(weights)}}
    with pytest.raises(ValueError, match="1000-class head but num_classes=10.*reset_head: true"):
        create_student(TEST_RESNET, num_classes=10, checkpoint="timm", **overlay)
    for classes in (10, 1000):
        student = create_student(TEST_RESNET, num_classes=classes, checkpoint="timm", reset_head=True, **overlay)
        assert torch.equal(student.conv1[0].weight, source.conv1[0].weight)
        assert student.fc.out_features == classes and not torch.equal(student.fc.weight[:10], source.fc.weight[:10])


def test_a_teacher_never_resets_its_head_and_reset_head_needs_weights():
    base = {"name": "t", "data": {"source": "digits"}, "distill": {"method": "kd"}}
    with pytest.raises(RecipeError, match="teacher 'cifar_resnet8' has reset_head: true.*fine-tune it first"):
        recipe_from_dict({**base, "student": "cifar_resnet8",
                          "teacher": {"name": "cifar_resnet8", "checkpoint": "x.pth", "reset_head": True}})
    with pytest.raises(RecipeError, match="student.reset_head is true but student.checkpoint is empty"):
        recipe_from_dict({**base, "student": {"name": "cifar_resnet8", "reset_head": True}, "teacher": "cifar_resnet8"})


def test_fine_tune_a_timm_teacher_then_distil(tmp_path):
    """README's two-step chain: reset_head fine-tunes timm weights to the data's classes, and its export
    teaches a student on other-sized data (the teacher's batch is resized to what it was fine-tuned on)."""
    weights = tmp_path / "timm_weights.pth"
    torch.save(timm.create_model(TEST_RESNET).state_dict(), weights)
    data = {"source": "digits", "transform": "none", "num_workers": 0, "persistent_workers": False,
            "max_eval_samples": 32}
    run = {"epochs": 1, "max_steps": 2, "batch_size": 16, "cpu": True}
    train(recipe_from_dict({
        "name": "teacher_ft", "data": {**data, "image_size": 32}, "distill": {"method": "none"},
        "student": {"name": TEST_RESNET, "checkpoint": "timm", "reset_head": True,
                    "kwargs": {"pretrained_cfg_overlay": {"file": str(weights)}}},  # timm's weights, offline
        "train": {**run, "output_dir": str(tmp_path / "teacher_ft")},
    }))
    train(recipe_from_dict({
        "name": "distil", "data": {**data, "image_size": 16}, "distill": {"method": "kd"}, "student": "cifar_resnet8",
        "teacher": {"name": TEST_RESNET, "checkpoint": str(tmp_path / "teacher_ft" / "student")},
        "train": {**run, "output_dir": str(tmp_path / "distil")},
    }))
    info = json.loads((tmp_path / "distil" / "run_info.json").read_text())
    (record,) = info["teacher_input"]
    assert record["adapted"] and record["teacher"]["image_size"] == 32 and record["data"]["image_size"] == 16
    assert info["data"]["num_classes"] == 10
