"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis, 2016) for CIFAR, as released by RepDistiller / mdistiller.

Pre-activation blocks in three stages of (d - 4) / 6 blocks with widths 16k, 32k, 64k after a 16-channel
3x3 stem; a final BN-ReLU precedes the pooled head ``fc``. Stage ``i`` is ``block{i}.layer`` in the
released checkpoints and a width-changing block's 1x1 projection is ``convShortcut``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitkd.models.cifar_base import CifarNet, cifar_cfg, kaiming_init_convs


class WideBlock(nn.Module):
    """``shortcut + conv2(relu(bn2(conv1(relu(bn1(x))))))``, the first conv carrying the stride.

    When the width changes, the 1x1 projection is applied to the pre-activated ``relu(bn1(x))``
    (as in the original), otherwise the shortcut is ``x`` itself.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False) if in_chs != out_chs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class WideStage(nn.Module):
    """``depth`` wide blocks under ``.layer``; the first changes width and carries ``stride``."""

    def __init__(self, depth: int, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1)
                for i in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class CifarWideResNet(CifarNet):
    """WRN-``depth``-``widen_factor``: ``depth`` = 6n + 4, n blocks per stage."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        *,
        in_chans: int = 3,
        num_classes: int = 100,
        global_pool: str = "avg",
    ) -> None:
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 (16, 22, 28, 40 ...), got depth={depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        super().__init__(widths[3], in_chans, global_pool)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1)
        self.block2 = WideStage(n, widths[1], widths[2], 2)
        self.block3 = WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.reset_classifier(num_classes)
        kaiming_init_convs(self)
        if num_classes > 0:
            nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in (self.block1, self.block2, self.block3):
            x = self.run_stage(stage, x)
        return F.relu(self.bn1(x))


def _wrn(variant: str, pretrained: bool, depth: int, widen_factor: int, **kwargs) -> CifarWideResNet:
    return build_model_with_cfg(
        CifarWideResNet, variant, pretrained, depth=depth, widen_factor=widen_factor, **kwargs
    )


default_cfgs = generate_default_cfgs(
    {f"cifar_wrn_{d}_{k}": cifar_cfg("fc") for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))}
)


@register_model
def cifar_wrn_16_1(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    return _wrn("cifar_wrn_16_1", pretrained, 16, 1, **kwargs)


@register_model
def cifar_wrn_16_2(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    return _wrn("cifar_wrn_16_2", pretrained, 16, 2, **kwargs)


@register_model
def cifar_wrn_40_1(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    return _wrn("cifar_wrn_40_1", pretrained, 40, 1, **kwargs)


@register_model
def cifar_wrn_40_2(pretrained: bool = False, **kwargs) -> CifarWideResNet:
    return _wrn("cifar_wrn_40_2", pretrained, 40, 2, **kwargs)
