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
from vitkd.export import export_student

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
LABELS = ["apple", "bee", "cat", "dog", "eel"]


def tiny_vit(seed: int = 0) -> nn.Module:
    """A 1-block ViT on 32 px images with 5 classes, exported under timm's own architecture name."""
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5
    )


def export_tiny_vit(out_dir: Path, seed: int = 0, **overrides) -> Path:
    kwargs = dict(
        architecture="vit_tiny_patch16_224",
        num_classes=5,
        label_names=LABELS,
        mean=MEAN,
        std=STD,
        input_size=(3, 32, 32),
    )
    return export_student(tiny_vit(seed), out_dir, **{**kwargs, **overrides})


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_vit_round_trip_gives_identical_logits_and_config(tmp_path):
    model = tiny_vit()
    out = export_student(
        model,
        tmp_path / "student",
        architecture="vit_tiny_patch16_224",
        num_classes=5,
        label_names=LABELS,
        mean=MEAN,
        std=STD,
        input_size=(3, 32, 32),
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
    out = export_student(
        model,
        tmp_path / "r",
        architecture="resnet10t",
        num_classes=3,
        in_chans=1,
        mean=(0.5,),
        std=(0.25,),
        input_size=(1, 64, 64),
        crop_pct=0.875,
        interpolation="bicubic",
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
    out = export_student(
        wrapped,
        tmp_path / "s",
        architecture="vit_tiny_patch16_224",
        num_classes=5,
        mean=MEAN,
        std=STD,
        input_size=(3, 32, 32),
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
        ({"mean": (0.5, 0.5)}, "mean needs one value per channel"),
        ({"std": (0.2, 0.0, 0.2)}, "std values must be positive"),
        ({"label_names": ["a", "b"]}, "label_names has 2 names but num_classes=5"),
        ({"input_size": (1, 32, 32)}, r"input_size must be \(in_chans=3, H, W\)"),
        ({"input_size": (3, 64, 64)}, "model requires"),  # timm: a fixed-size ViT cannot be exported at 64 px
        ({"num_classes": 7, "label_names": None}, "num_classes=7 disagrees"),
        ({"crop_pct": 1.5}, "crop_pct"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        export_tiny_vit(tmp_path / "student", **overrides)
    assert list(tmp_path.iterdir()) == []


def test_plain_module_is_refused(tmp_path):
    with pytest.raises(TypeError, match="needs a timm model"):
        export_student(
            nn.Linear(4, 5),
            tmp_path / "s",
            architecture="resnet18",
            num_classes=5,
            mean=MEAN,
            std=STD,
            input_size=(3, 32, 32),
        )


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
    out = export_student(
        model,
        tmp_path / "s",
        architecture="cifar_resnet8",
        num_classes=10,
        mean=MEAN,
        std=STD,
        input_size=(3, 32, 32),
    )
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(eval_logits(loaded, x), eval_logits(model, x))
