"""ShuffleNet V1 (Zhang et al., 2018) and V2 (Ma et al., 2018) for CIFAR, as released by RepDistiller / mdistiller.

Both replace the ImageNet stem by a 1x1 conv to 24 channels at full resolution (no stride, no
max-pool), then run three stages ``layer1 ... layer3`` whose first block halves the size; the head is
``linear``. Both keep PyTorch's default init, as the originals do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitkd.models.cifar_base import CifarNet, cifar_cfg

STEM_WIDTH = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, groups * c, H, W) -> (B, c * groups, H, W): interleave the channels of the ``groups`` groups."""
    return rearrange(x, "b (g c) h w -> b (c g) h w", g=groups)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 - channel shuffle - 3x3 depthwise - grouped 1x1, then ReLU of the merge with the input.

    At stride 1 the input is added; at stride 2 the 3x3 average-pooled input is concatenated, so that
    the block outputs ``out_chs + in_chs`` channels.

    Args:
        in_groups: groups of the first 1x1 conv and of the shuffle (1 on the ungrouped stem output).
        groups: groups of the last 1x1 conv.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, in_groups: int) -> None:
        super().__init__()
        mid_chs = out_chs // 4
        self.stride = stride
        self.in_groups = in_groups
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, groups=in_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.conv2 = nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, groups=mid_chs, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(mid_chs, out_chs, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.in_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], dim=1))
        return F.relu(out + x)


class CifarShuffleNetV1(CifarNet):
    """ShuffleNet V1 with ``groups`` groups; stage ``i`` outputs ``widths[i]`` channels in ``depths[i]`` blocks."""

    classifier_name = "linear"

    def __init__(
        self,
        widths: tuple[int, int, int] = (240, 480, 960),
        depths: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(widths[-1], in_chans, global_pool)
        self.conv1 = nn.Conv2d(in_chans, STEM_WIDTH, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        in_chs = STEM_WIDTH
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            # the first block concatenates its pooled input, so it only makes width - in_chs new channels;
            # the network's very first block reads the stem output with an ungrouped 1x1 conv
            in_groups = 1 if i == 0 else groups
            blocks = [ShuffleV1Block(in_chs, width - in_chs, 2, groups, in_groups)]
            blocks += [ShuffleV1Block(width, width, 1, groups, groups) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
        self.layer1, self.layer2, self.layer3 = stages
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            x = self.run_stage(stage, x)
        return x


class ShuffleV2Block(nn.Module):
    """Stride 1: split the channels in half, transform the second (1x1 - 3x3 depthwise - 1x1), concat, shuffle."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        half = chs // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, x = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], dim=1), 2)


class ShuffleV2DownBlock(nn.Module):
    """Stride 2: two branches on the whole input, each making ``out_chs / 2`` channels; concat, shuffle.

    Left: 3x3 depthwise (stride 2) - 1x1. Right: 1x1 - 3x3 depthwise (stride 2) - 1x1.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid_chs = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, in_chs, 3, 2, 1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_chs)
        self.conv4 = nn.Conv2d(mid_chs, mid_chs, 3, 2, 1, groups=mid_chs, bias=False)
        self.bn4 = nn.BatchNorm2d(mid_chs)
        self.conv5 = nn.Conv2d(mid_chs, mid_chs, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class CifarShuffleNetV2(CifarNet):
    """ShuffleNet V2 (1x): stage ``i`` is a down block to ``widths[i]`` then ``depths[i]`` stride-1 blocks,
    followed by a 1x1 conv-BN-ReLU to ``last_chs`` channels."""

    classifier_name = "linear"

    def __init__(
        self,
        widths: tuple[int, int, int] = (116, 232, 464),
        depths: tuple[int, int, int] = (3, 7, 3),
        last_chs: int = 1024,
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(last_chs, in_chans, global_pool)
        self.conv1 = nn.Conv2d(in_chans, STEM_WIDTH, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        in_chs = STEM_WIDTH
        stages = []
        for width, depth in zip(widths, depths, strict=True):
            stages.append(
                nn.Sequential(
                    ShuffleV2DownBlock(in_chs, width), *(ShuffleV2Block(width) for _ in range(depth))
                )
            )
            in_chs = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(in_chs, last_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_chs)
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            x = self.run_stage(stage, x)
        return F.relu(self.bn2(self.conv2(x)))


default_cfgs = generate_default_cfgs(
    {
        "cifar_shufflev1": cifar_cfg("linear"),
        "cifar_shufflev2": cifar_cfg("linear"),
    }
)


@register_model
def cifar_shufflev1(pretrained: bool = False, **kwargs) -> CifarShuffleNetV1:
    """ShuffleNet V1, 3 groups, stage widths 240-480-960 ("ShuffleV1" of the releases)."""
    return build_model_with_cfg(CifarShuffleNetV1, "cifar_shufflev1", pretrained, **kwargs)


@register_model
def cifar_shufflev2(pretrained: bool = False, **kwargs) -> CifarShuffleNetV2:
    """ShuffleNet V2 1x, stage widths 116-232-464 ("ShuffleV2" of the releases)."""
    return build_model_with_cfg(CifarShuffleNetV2, "cifar_shufflev2", pretrained, **kwargs)
