"""VGG with batch norm for CIFAR (Simonyan & Zisserman, 2014), as released by RepDistiller / mdistiller.

Five blocks ``block0 ... block4`` of 3x3 conv (with bias) - BN - ReLU layers, 2x2 max-pools after
blocks 0-2, and no fully connected layers except the head ``classifier`` on the globally averaged
512 channels. The original also pools after block 3, but only for 64 px inputs (Tiny-ImageNet):
at 32 px block 4 runs at 4x4. Kept as is so that the released weights behave as trained.
(The original drops each block's last ReLU and applies it outside the block; keeping it inside gives
the same numbers and, being parameter-free, the same state-dict keys.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitkd.models.cifar_base import CifarNet, cifar_cfg, conv_bn, kaiming_init_convs

# conv widths of blocks 0-4 per depth (configurations S, A, B, D, E of the paper / the original code)
VGG_WIDTHS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class CifarVGG(CifarNet):
    """VGG-BN whose block ``i`` has convs of ``widths[i]`` channels."""

    classifier_name = "classifier"

    def __init__(
        self,
        widths: Sequence[Sequence[int]],
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(widths[-1][-1], in_chans, global_pool)
        self.block_names = tuple(f"block{i}" for i in range(len(widths)))
        in_chs = in_chans
        for name, block_widths in zip(self.block_names, widths, strict=True):
            layers: list[nn.Module] = []
            for width in block_widths:
                layers += conv_bn(in_chs, width, 3, bias=True)
                in_chs = width
            self.add_module(name, nn.Sequential(*layers))
        self.reset_classifier(num_classes)
        kaiming_init_convs(self)
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, std=0.01)
            nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pooled_blocks = 4 if x.shape[-2] == 64 else 3  # the original's Tiny-ImageNet special case
        for i, name in enumerate(self.block_names):
            x = self.run_stage(getattr(self, name), x)
            if i < pooled_blocks:
                x = F.max_pool2d(x, 2)
        return x


def _vgg(variant: str, pretrained: bool, depth: int, **kwargs) -> CifarVGG:
    return build_model_with_cfg(CifarVGG, variant, pretrained, widths=VGG_WIDTHS[depth], **kwargs)


default_cfgs = generate_default_cfgs(
    {f"cifar_vgg{d}": cifar_cfg("classifier", first_conv="block0.0") for d in VGG_WIDTHS}
)


@register_model
def cifar_vgg8(pretrained: bool = False, **kwargs) -> CifarVGG:
    return _vgg("cifar_vgg8", pretrained, 8, **kwargs)


@register_model
def cifar_vgg11(pretrained: bool = False, **kwargs) -> CifarVGG:
    return _vgg("cifar_vgg11", pretrained, 11, **kwargs)


@register_model
def cifar_vgg13(pretrained: bool = False, **kwargs) -> CifarVGG:
    return _vgg("cifar_vgg13", pretrained, 13, **kwargs)


@register_model
def cifar_vgg16(pretrained: bool = False, **kwargs) -> CifarVGG:
    return _vgg("cifar_vgg16", pretrained, 16, **kwargs)


@register_model
def cifar_vgg19(pretrained: bool = False, **kwargs) -> CifarVGG:
    return _vgg("cifar_vgg19", pretrained, 19, **kwargs)
