"""MobileNetV2 (Sandler et al., 2018) at half width for CIFAR, as released by RepDistiller / mdistiller.

The CIFAR variant keeps the ImageNet stride-2 stem but runs the 24-channel stage at stride 1, so a
32 px input reaches the last 1x1 conv (1280 channels, not scaled by the width) at 2x2. Expansion
ratio 6, width multiplier 0.5; the head is ``classifier.0`` (a one-layer Sequential in the original).
"""

from __future__ import annotations

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitkd.models.cifar_base import CifarNet, cifar_cfg, conv_bn, kaiming_init_convs

# (channels at width 1, blocks, stride of the first block) per stage; the first stage does not expand
_STAGES = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise (carrying the stride) - 1x1 linear projection, as one Sequential ``conv``.

    The identity is added when stride is 1 and the width is unchanged. Unlike later variants, the
    1x1 expansion is kept even for ratio 1 (the released checkpoints have it).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        self.has_identity = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            *conv_bn(in_chs, mid_chs, 1),
            *conv_bn(mid_chs, mid_chs, 3, stride, groups=mid_chs),
            *conv_bn(mid_chs, out_chs, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.has_identity else out


class CifarMobileNetV2(CifarNet):
    """MobileNetV2 with channel counts ``int(c * width_mult)``; the last conv has 1280 channels unless widened."""

    classifier_name = "classifier"

    def __init__(
        self,
        width_mult: float = 0.5,
        expand_ratio: int = 6,
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
    ) -> None:
        last_chs = int(1280 * width_mult) if width_mult > 1.0 else 1280
        super().__init__(last_chs, in_chans, global_pool)
        in_chs = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn(in_chans, in_chs, 3, stride=2))
        self.blocks = nn.ModuleList()
        for i, (chs, depth, stride) in enumerate(_STAGES):
            out_chs = int(chs * width_mult)
            ratio = 1 if i == 0 else expand_ratio
            stage = []
            for j in range(depth):
                stage.append(InvertedResidual(in_chs, out_chs, stride if j == 0 else 1, ratio))
                in_chs = out_chs
            self.blocks.append(nn.Sequential(*stage))
        self.conv2 = nn.Sequential(*conv_bn(in_chs, last_chs, 1))
        self.reset_classifier(num_classes)
        kaiming_init_convs(self)
        if num_classes > 0:
            nn.init.normal_(self.classifier[0].weight, std=0.01)
            nn.init.zeros_(self.classifier[0].bias)

    def make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Sequential(super().make_classifier(num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = self.run_stage(stage, x)
        return self.conv2(x)


default_cfgs = generate_default_cfgs(
    {
        "cifar_mobilenetv2": cifar_cfg("classifier.0", first_conv="conv1.0"),
    }
)


@register_model
def cifar_mobilenetv2(pretrained: bool = False, **kwargs) -> CifarMobileNetV2:
    """The half-width CIFAR MobileNetV2 ("MobileNetV2" / ``mobile_half`` of the releases)."""
    return build_model_with_cfg(CifarMobileNetV2, "cifar_mobilenetv2", pretrained, **kwargs)
