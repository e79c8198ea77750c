"""Small ViTs for 32 px CIFAR images: timm's ``VisionTransformer`` with 4x4 patches (8x8 = 64 tokens + CLS).

* ``vitkd_deit_small_patch4_32``: DeiT-S geometry (embed 384, depth 12, 6 heads, MLP ratio 4), the
  paper's ViT teacher.
* ``vitkd_deit_tiny_patch4_32``: DeiT-Ti geometry (embed 192, depth 12, 3 heads, MLP ratio 4).
* ``vitkd_deit_nano_patch4_32``: embed 128, depth 12, 2 heads (head dim 64 as in DeiT-S/Ti), MLP
  ratio 4: 2,407,140 parameters at 100 classes. It stands for the ~2.4 M-parameter student of the
  LumiNet paper's ViT table (reported as 2.38 M); the paper does not publish that student's exact
  configuration, so this one is our choice, not a reproduction.

The models differ from timm's ``vit_small_patch16_224`` / ``vit_tiny_patch16_224`` only in geometry,
so :data:`VIT_EXPORT_ARCH` names that timm architecture and the arguments rebuilding each of them with
plain timm (what :func:`vitkd.export.export_spec` records for exported checkpoints).
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vitkd.models.cifar_base import CIFAR100_MEAN, CIFAR100_STD

_PATCH4_32 = dict(img_size=32, patch_size=4)

# vitkd name -> (timm architecture, the kwargs that make it this model)
VIT_EXPORT_ARCH: dict[str, tuple[str, dict[str, Any]]] = {
    "vitkd_deit_small_patch4_32": (
        "vit_small_patch16_224",
        dict(_PATCH4_32, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    ),
    "vitkd_deit_tiny_patch4_32": (
        "vit_tiny_patch16_224",
        dict(_PATCH4_32, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    ),
    "vitkd_deit_nano_patch4_32": (
        "vit_tiny_patch16_224",
        dict(_PATCH4_32, embed_dim=128, depth=12, num_heads=2, mlp_ratio=4.0),
    ),
}


def _cfg() -> dict[str, Any]:
    return dict(
        num_classes=100,
        input_size=(3, 32, 32),
        fixed_input_size=True,
        crop_pct=1.0,
        interpolation="bicubic",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        first_conv="patch_embed.proj",
        classifier="head",
    )


default_cfgs = generate_default_cfgs({name: _cfg() for name in VIT_EXPORT_ARCH})


def _create_vit(variant: str, pretrained: bool, **kwargs) -> VisionTransformer:
    _, geometry = VIT_EXPORT_ARCH[variant]
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **{**geometry, **kwargs},
    )


@register_model
def vitkd_deit_small_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-S geometry on 32 px CIFAR images with 4x4 patches (the ViT teacher)."""
    return _create_vit("vitkd_deit_small_patch4_32", pretrained, **kwargs)


@register_model
def vitkd_deit_tiny_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-Ti geometry on 32 px CIFAR images with 4x4 patches."""
    return _create_vit("vitkd_deit_tiny_patch4_32", pretrained, **kwargs)


@register_model
def vitkd_deit_nano_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Embed 128, depth 12, 2 heads, 4x4 patches: our ~2.4 M-parameter stand-in for the paper's ViT student.

    The paper reports 2.38 M parameters and no configuration; this one has 2,407,140 at 100 classes.
    """
    return _create_vit("vitkd_deit_nano_patch4_32", pretrained, **kwargs)
