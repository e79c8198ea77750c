"""vitkd.export: timm Hub-folder export round trips, config contents, wrappers, atomic replacement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import vitkd.export
from vitkd.data import DataInfo
from vitkd.export import export_student, write_export
from vitkd.recipe import ModelConfig

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
LABELS = ["apple", "bee", "cat", "dog", "eel"]


def tiny_vit(seed: int = 0) -> nn.Module:
    """A 1-block ViT on 32 px images with 5 classes, exported under timm's own architecture name."""
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5
    )


def data_config(**overrides) -> dict:
    return {"input_size": (3, 32, 32), "mean": MEAN, "std": STD, **overrides}


def export_tiny_vit(out_dir: Path, seed: int = 0, data: dict | None = None, **overrides) -> Path:
    kwargs = dict(architecture="vit_tiny_patch16_224", num_classes=5, label_names=LABELS)
    return write_export(tiny_vit(seed), out_dir, data_config=data_config(**(data or {})), **{**kwargs, **overrides})


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_vit_round_trip_gives_identical_logits_and_config(tmp_path):
    model = tiny_vit()
    out = write_export(
        model,
        tmp_path / "student",
        architecture="vit_tiny_patch16_224",
        num_classes=5,
        label_names=LABELS,
        data_config={"mean": MEAN, "std": STD, "input_size": (3, 32, 32)},
    )
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(eval_logits(loaded, x), eval_logits(model, x))

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["num_classes"] == 5 and config["label_names"] == LABELS
    assert config["model_args"]["embed_dim"] == 32 and config["model_args"]["depth"] == 1
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == list(MEAN) and cfg["std"] == list(STD) and cfg["input_size"] == [3, 32, 32]
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    # metadata of timm's released vit_tiny weights must not be attributed to the student
    assert not {"tag", "license", "paper_ids"} & cfg.keys()
    # timm's own data-config resolution sees the student's preprocessing
    data_config = timm.data.resolve_model_data_config(loaded)
    assert data_config["input_size"] == (3, 32, 32) and tuple(data_config["mean"]) == MEAN


def test_resnet_one_channel_round_trip_with_crop_settings(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=3, in_chans=1)
    out = write_export(
        model,
        tmp_path / "r",
        architecture="resnet10t",
        num_classes=3,
        data_config={"mean": (0.5,), "std": (0.25,), "input_size": (1, 64, 64), "crop_pct": 0.875, "interpolation": "bicubic"},
    )
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(eval_logits(loaded, x), eval_logits(model, x))
    data_config = timm.data.resolve_model_data_config(loaded)
    assert data_config["input_size"] == (1, 64, 64)
    assert data_config["crop_pct"] == 0.875 and data_config["interpolation"] == "bicubic"
    assert "label_names" not in json.loads((out / "config.json").read_text())


def test_compiled_and_data_parallel_wrappers_are_unwrapped(tmp_path):
    model = tiny_vit()
    wrapped = torch.compile(nn.DataParallel(model))  # compile is lazy: wrapping costs nothing here
    out = write_export(
        wrapped,
        tmp_path / "s",
        architecture="vit_tiny_patch16_224",
        num_classes=5,
        data_config={"mean": MEAN, "std": STD, "input_size": (3, 32, 32)},
    )
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(eval_logits(loaded, x), eval_logits(model, x))


def test_second_export_replaces_the_first_and_leaves_nothing_behind(tmp_path):
    export_tiny_vit(tmp_path / "student", seed=0)
    first = folder_snapshot(tmp_path / "student")
    export_tiny_vit(tmp_path / "student", seed=1)
    assert folder_snapshot(tmp_path / "student")["model.safetensors"] != first["model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["student"]


def _save_then_crash(*args, **kwargs):
    timm.models.save_for_hf(*args, **kwargs)  # the files are complete in the staging folder ...
    raise KeyboardInterrupt("simulated crash mid-export")  # ... when the process dies


@pytest.mark.parametrize(
    ("patch", "overrides", "error"),
    [
        (_save_then_crash, {}, KeyboardInterrupt),
        # a config timm cannot rebuild the weights from (the distilled DeiT has extra tokens and a head)
        (None, {"architecture": "deit_tiny_distilled_patch16_224"}, RuntimeError),
    ],
    ids=["crash-mid-write", "unloadable-config"],
)
def test_failed_export_keeps_the_previous_one_intact(tmp_path, monkeypatch, patch, overrides, error):
    export_tiny_vit(tmp_path / "student", seed=0)
    before = folder_snapshot(tmp_path / "student")
    if patch is not None:
        monkeypatch.setattr(vitkd.export, "save_for_hf", patch)
    with pytest.raises(error):
        export_tiny_vit(tmp_path / "student", seed=1, **overrides)
    assert folder_snapshot(tmp_path / "student") == before
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no staging folder left behind


def test_failed_swap_restores_the_previous_export(tmp_path, monkeypatch):
    export_tiny_vit(tmp_path / "student", seed=0)
    before = folder_snapshot(tmp_path / "student")
    real_rename = Path.rename

    def rename_failing_for_staging(self, target):
        if self.name.startswith(".student.tmp-"):
            raise OSError("simulated failure renaming the new export into place")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_for_staging)
    with pytest.raises(OSError, match="simulated"):
        export_tiny_vit(tmp_path / "student", seed=1)
    assert folder_snapshot(tmp_path / "student") == before
    assert [p.name for p in tmp_path.iterdir()] == ["student"]


def test_unloadable_config_error_names_architecture(tmp_path):
    with pytest.raises(RuntimeError, match="architecture='deit_tiny_distilled_patch16_224'"):
        export_tiny_vit(tmp_path / "student", architecture="deit_tiny_distilled_patch16_224")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"architecture": "no_such_net"}, "architecture='no_such_net' is not registered with timm"),
        ({"data": {"mean": (0.5, 0.5)}}, "mean needs one value per channel"),
        ({"data": {"std": (0.2, 0.0, 0.2)}}, "std values must be positive"),
        ({"label_names": ["a", "b"]}, "label_names has 2 names but num_classes=5"),
        ({"data": {"input_size": (32, 32)}}, r"input_size must be \(C, H, W\)"),
        ({"data": {"input_size": (1, 32, 32)}}, "mean needs one value per channel"),
        ({"data": {"input_size": (3, 64, 64)}}, "model requires"),  # timm: a fixed-size ViT cannot be exported at 64 px
        ({"num_classes": 7, "label_names": None}, "num_classes=7 disagrees"),
        ({"data": {"crop_pct": 1.5}}, "crop_pct"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        export_tiny_vit(tmp_path / "student", **overrides)
    assert list(tmp_path.iterdir()) == []


def test_plain_module_is_refused(tmp_path):
    with pytest.raises(TypeError, match="needs a timm model"):
        write_export(nn.Linear(4, 5), tmp_path / "s", architecture="resnet18", num_classes=5,
                     data_config=data_config())


_BARE_TIMM_LOAD = """
import sys
import timm, torch
from safetensors.torch import load_file
model = timm.create_model(sys.argv[1], pretrained=True).eval()
io = load_file(sys.argv[2])
with torch.no_grad():
    assert torch.equal(model(io["x"]), io["logits"]), "logits differ"
assert "vitkd" not in sys.modules, "vitkd was imported"
print("ok")
"""


def test_bare_timm_loads_a_vit_export_without_vitkd(tmp_path):
    model = tiny_vit()
    out = export_tiny_vit(tmp_path / "student")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    save_file({"x": x, "logits": eval_logits(model, x)}, tmp_path / "io.safetensors")
    result = subprocess.run(
        [sys.executable, "-c", _BARE_TIMM_LOAD, f"local-dir:{out}", str(tmp_path / "io.safetensors")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cifar_zoo_round_trip(tmp_path):
    import vitkd  # noqa: F401  (registers vitkd's CIFAR zoo with timm)

    if not timm.is_model("cifar_resnet8"):
        pytest.skip("vitkd.models does not register cifar_resnet8 yet")
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet8", num_classes=10)
    out = write_export(
        model,
        tmp_path / "s",
        architecture="cifar_resnet8",
        num_classes=10,
        data_config={"mean": MEAN, "std": STD, "input_size": (3, 32, 32)},
    )
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(eval_logits(loaded, x), eval_logits(model, x))


# ----------------------------------------------------------------------------- the recipe-level export and loading


def test_export_student_records_the_recipe_student_and_the_data_info(tmp_path):
    import vitkd  # noqa: F401  (registers vitkd's ViTs with timm)

    student = ModelConfig("vitkd_deit_tiny_patch4_32", kwargs={"drop_path_rate": 0.1})
    info = DataInfo(num_classes=5, class_names=LABELS, image_size=32, in_chans=3, mean=MEAN, std=STD,
                    crop_pct=0.875, interpolation="bicubic")
    model = timm.create_model(student.name, num_classes=5, **student.kwargs)
    config = json.loads((export_student(model, tmp_path / "s", student, info) / "config.json").read_text())
    assert config["architecture"] == vitkd.export.export_spec(student.name)[0]  # timm's own ViT name
    assert config["label_names"] == LABELS and config["model_args"]["drop_path_rate"] == 0.1
    cfg = config["pretrained_cfg"]
    assert (cfg["input_size"], cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"]) == (
        [3, 32, 32], 0.875, "center", "bicubic"
    )


def test_imagenet_transform_run_exports_the_eval_crop(tmp_path):
    """Done-when of issue 11: the export of an ImageNet-transform run describes Resize + CenterCrop at 0.875."""
    from vitkd.data.synthetic import write_image_folder
    from vitkd.data.transforms import eval_pipeline
    from vitkd.engine import train
    from vitkd.recipe import recipe_from_dict

    folder = write_image_folder(tmp_path / "images", splits=("train", "validation"), num_classes=2, per_class=4,
                                size=48)
    recipe = recipe_from_dict({
        "name": "imagenet_transform",
        "data": {"source": str(folder), "transform": "imagenet", "image_size": 32, "num_workers": 0,
                 "persistent_workers": False, "cache_dir": str(tmp_path / "cache")},
        "student": "cifar_resnet8",
        "distill": {"method": "none"},
        "train": {"epochs": 1, "max_steps": 1, "batch_size": 4, "output_dir": str(tmp_path / "run"), "cpu": True,
                  "checkpoint_every": 0},
    })
    train(recipe)
    cfg = json.loads((tmp_path / "run" / "student" / "config.json").read_text())["pretrained_cfg"]
    resize, crop = eval_pipeline(recipe.data).transforms[:2]
    assert cfg["crop_pct"] == 0.875 and cfg["input_size"] == [3, 32, 32]
    assert cfg["interpolation"] == resize.interpolation.value  # 'bilinear', as the eval pipeline resizes
    assert resize.size == int(32 / cfg["crop_pct"]) and tuple(crop.size) == (32, 32)
    # the export's data config gives back the imagenet evaluation preset
    data = vitkd.export.data_config_for(vitkd.export.load_model(tmp_path / "run" / "student"), str(folder))
    assert data.transform == "imagenet" and data.effective_image_size == 32


@pytest.fixture
def resnet_export(tmp_path):
    import vitkd  # noqa: F401  (registers vitkd's CIFAR zoo with timm)

    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet8", num_classes=10, in_chans=1)
    out = write_export(model, tmp_path / "student", architecture="cifar_resnet8", num_classes=10,
                       data_config={"input_size": (1, 16, 16), "mean": (0.5,), "std": (0.25,)})
    return model, out


def test_load_model_from_export_folder_and_bare_checkpoint(resnet_export, tmp_path):
    model, folder = resnet_export
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    loaded = vitkd.export.load_model(folder)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())  # frozen
    assert torch.equal(loaded(x), eval_logits(model, x))
    weights = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(weights))
    with pytest.raises(ValueError, match="bare checkpoint"):
        vitkd.export.load_model(weights)
    loaded = vitkd.export.load_model(weights, arch="cifar_resnet8", num_classes=10, in_chans=1)
    assert torch.equal(loaded(x), eval_logits(model, x))
    with pytest.raises(FileNotFoundError, match="neither an export folder"):
        vitkd.export.load_model(tmp_path / "nowhere")


def test_data_config_for_takes_the_exports_protocol(resnet_export, tmp_path):
    _, folder = resnet_export
    data = vitkd.export.data_config_for(vitkd.export.load_model(folder), "digits", eval_split="test")
    assert (data.in_chans, data.effective_image_size, data.mean, data.std) == (1, 16, (0.5,), (0.25,))
    assert data.transform == "cifar" and data.eval_split == "test"  # crop_pct 1.0: resize only
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["interpolation"] = "bicubic"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="interpolation='bicubic', which no data.transform preset reproduces"):
        vitkd.export.data_config_for(vitkd.export.load_model(folder), "digits")
