"""vitkd's small ViTs on timm, and export_spec: an exported vitkd ViT loads in timm without vitkd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import timm
import torch

from vitkd.export import export_spec
from vitkd.models import VIT_MODELS
from vitkd.models.cifar_base import CIFAR100_MEAN, CIFAR100_STD

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", VIT_MODELS)
def test_forward_backward_at_32px(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert (model.pretrained_cfg["mean"], model.pretrained_cfg["std"]) == (CIFAR100_MEAN, CIFAR100_STD)
    assert model.patch_embed.num_patches == 64
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 65, model.embed_dim)  # CLS + 8x8 patch tokens
    logits = model.forward_head(features)
    assert logits.shape == (2, 100)
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_nano_size():
    model = timm.create_model("vitkd_deit_nano_patch4_32", num_classes=100)
    assert (model.embed_dim, len(model.blocks)) == (128, 12)
    assert 2_300_000 <= sum(p.numel() for p in model.parameters()) <= 2_500_000


def test_names_do_not_clash_with_timm():
    assert set(timm.list_models("vitkd_*")) == set(VIT_MODELS)
    assert not set(VIT_MODELS) & set(timm.list_models(module="vision_transformer"))


_LOAD_WITHOUT_VITKD = textwrap.dedent(
    """
    import json, sys
    import safetensors.torch, timm, torch
    for spec in json.load(open(sys.argv[1])):
        model = timm.create_model(spec["architecture"], num_classes=100, **spec["model_args"]).eval()
        model.load_state_dict(safetensors.torch.load_file(spec["weights"]), strict=True)
        x, expected = torch.load(spec["io"])
        with torch.no_grad():
            assert torch.equal(model(x), expected), spec["architecture"]
    assert "vitkd" not in sys.modules
    print("loaded", len(json.load(open(sys.argv[1]))))
    """
)


def test_export_spec_rebuilds_vits_in_bare_timm(tmp_path):
    specs = []
    for name in VIT_MODELS:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=100, drop_path_rate=0.1).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.save((x, model(x)), tmp_path / f"{name}.pt")
        safetensors.torch.save_file(model.state_dict(), tmp_path / f"{name}.safetensors")
        architecture, model_args = export_spec(name, num_classes=100, drop_path_rate=0.1, pretrained=False)
        assert not architecture.startswith("vitkd")
        specs.append(
            dict(
                architecture=architecture,
                model_args=model_args,
                weights=str(tmp_path / f"{name}.safetensors"),
                io=str(tmp_path / f"{name}.pt"),
            )
        )
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_VITKD, str(tmp_path / "specs.json")],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"loaded {len(VIT_MODELS)}"


def test_export_spec_keeps_other_models_and_drops_stored_keys():
    assert export_spec("cifar_resnet8", num_classes=10, in_chans=1, pretrained=False) == ("cifar_resnet8", {})
    assert export_spec(
        "resnet18.a1_in1k",
        num_classes=10,
        pretrained=True,
        pretrained_cfg_overlay={},
        drop_rate=0.1,
        global_pool=None,
    ) == ("resnet18", {"drop_rate": 0.1})


def test_export_spec_user_kwargs_override_vit_geometry():
    architecture, model_args = export_spec("vitkd_deit_tiny_patch4_32", img_size=64)
    assert architecture == "vit_tiny_patch16_224"
    assert model_args == dict(img_size=64, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)


@pytest.mark.parametrize(
    ("name", "message"),
    [("hf-hub:timm/resnet18.a1_in1k", "registered architecture"), ("no_such_model", "unknown model")],
)
def test_export_spec_rejects_unknown_names(name, message):
    with pytest.raises(ValueError, match=message):
        export_spec(name)
