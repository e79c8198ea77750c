"""CIFAR ResNets (He et al., 2016) as released by RepDistiller / mdistiller.

Two families share one implementation, both post-activation ResNets with a 3x3 stride-1 stem and no
max-pool:

* the 3-stage ResNets of depth 6n+2 built from basic blocks (resnet8 ... resnet110 with widths
  16-16-32-64, resnet8x4 / resnet32x4 with 32-64-128-256): projection shortcut ``downsample``, head ``fc``;
* the 4-stage ResNet18 / ResNet50 (widths 64-128-256-512, ImageNet block counts): projection
  shortcut ``shortcut``, head ``linear``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitkd.models.cifar_base import CifarNet, cifar_cfg, conv_bn, kaiming_init_convs


class ResidualBlock(nn.Module, ABC):
    """``relu(branch(x) + shortcut(x))``; the shortcut is a 1x1 conv + BN where stride or width change.

    The shortcut is stored under ``shortcut_name``, the name the released checkpoints use for it.
    """

    expansion = 1

    def __init__(self, in_chs: int, chs: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.shortcut_name = shortcut_name
        out_chs = chs * self.expansion
        projects = stride != 1 or in_chs != out_chs
        shortcut = (
            nn.Sequential(*conv_bn(in_chs, out_chs, 1, stride, relu=False)) if projects else nn.Identity()
        )
        self.add_module(shortcut_name, shortcut)

    @abstractmethod
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, ending in BatchNorm (no ReLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + getattr(self, self.shortcut_name)(x))


class BasicBlock(ResidualBlock):
    """Two 3x3 convs; the first carries the stride."""

    def __init__(self, in_chs: int, chs: int, stride: int, shortcut_name: str) -> None:
        super().__init__(in_chs, chs, stride, shortcut_name)
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.conv2 = nn.Conv2d(chs, chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_chs: int, chs: int, stride: int, shortcut_name: str) -> None:
        super().__init__(in_chs, chs, stride, shortcut_name)
        self.conv1 = nn.Conv2d(in_chs, chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.conv2 = nn.Conv2d(chs, chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)
        self.conv3 = nn.Conv2d(chs, chs * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(chs * self.expansion)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class CifarResNet(CifarNet):
    """Stem ``relu(bn1(conv1 3x3))`` then stages ``layer1 ... layerN``; all but the first halve the size.

    Args:
        block: residual block class (``BasicBlock`` or ``Bottleneck``).
        depths: blocks per stage.
        widths: channels per stage (before the block's expansion).
        stem_width: channels of the stem convolution.
        classifier_name / shortcut_name: attribute names of the head and of the projection shortcuts.
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        depths: Sequence[int],
        widths: Sequence[int],
        stem_width: int,
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
        classifier_name: str = "fc",
        shortcut_name: str = "downsample",
    ) -> None:
        super().__init__(widths[-1] * block.expansion, in_chans, global_pool)
        self.classifier_name = classifier_name
        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(depths)))
        in_chs = stem_width
        for i, (name, depth, width) in enumerate(zip(self.stage_names, depths, widths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_chs, width, stride, shortcut_name))
                in_chs = width * block.expansion
            self.add_module(name, nn.Sequential(*blocks))
        self.reset_classifier(num_classes)
        kaiming_init_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = self.run_stage(getattr(self, name), x)
        return x


def _resnet_3stage(
    variant: str, pretrained: bool, depth: int, widths: Sequence[int], **kwargs
) -> CifarResNet:
    """Basic-block ResNet with ``depth`` = 6n + 2 layers; ``widths`` = (stem, stage 1, stage 2, stage 3)."""
    n = (depth - 2) // 6
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        block=BasicBlock,
        depths=(n, n, n),
        widths=widths[1:],
        stem_width=widths[0],
        **kwargs,
    )


def _resnet_4stage(
    variant: str, pretrained: bool, block: type[ResidualBlock], depths: Sequence[int], **kwargs
) -> CifarResNet:
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        block=block,
        depths=depths,
        widths=(64, 128, 256, 512),
        stem_width=64,
        classifier_name="linear",
        shortcut_name="shortcut",
        **kwargs,
    )


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

default_cfgs = generate_default_cfgs(
    {
        **{f"cifar_resnet{d}": cifar_cfg("fc") for d in (8, 14, 20, 32, 44, 56, 110)},
        "cifar_resnet8x4": cifar_cfg("fc"),
        "cifar_resnet32x4": cifar_cfg("fc"),
        "cifar_resnet18": cifar_cfg("linear"),
        "cifar_resnet50": cifar_cfg("linear"),
    }
)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet8", pretrained, 8, _NARROW, **kwargs)


@register_model
def cifar_resnet14(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet14", pretrained, 14, _NARROW, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet20", pretrained, 20, _NARROW, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet32", pretrained, 32, _NARROW, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet44", pretrained, 44, _NARROW, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet56", pretrained, 56, _NARROW, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet110", pretrained, 110, _NARROW, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet8x4", pretrained, 8, _WIDE, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_3stage("cifar_resnet32x4", pretrained, 32, _WIDE, **kwargs)


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_4stage("cifar_resnet18", pretrained, BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _resnet_4stage("cifar_resnet50", pretrained, Bottleneck, (3, 4, 6, 3), **kwargs)
