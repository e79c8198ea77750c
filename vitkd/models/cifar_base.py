"""What the CIFAR zoo shares: the timm model API, the pretrained cfg, conv-BN-ReLU stacks and the init.

The zoo re-implements the CIFAR architectures of RepDistiller / mdistiller (timm has none of them)
with module names chosen so that ``state_dict()`` keys equal those of the public checkpoint releases
(``<name>_vanilla/ckpt_epoch_240.pth``). That is why the families build their own blocks instead of
timm's (whose key names differ) and why this base only adds plumbing: each family defines its layers
and ``forward_features``; :class:`CifarNet` adds the pooled linear head and the timm methods around it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn
from torch.utils.checkpoint import checkpoint

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


def cifar_cfg(classifier: str, first_conv: str = "conv1") -> dict[str, Any]:
    """Pretrained cfg of a CIFAR-100 model at 3x32x32 (no crop at test time).

    Args:
        classifier: key prefix of the head in the state dict (``fc``, ``linear``, ``classifier.0`` ...).
        first_conv: key prefix of the stem convolution.
    """
    return dict(
        num_classes=100,
        input_size=(3, 32, 32),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        first_conv=first_conv,
        classifier=classifier,
        origin_url="https://github.com/megvii-research/mdistiller",
    )


def conv_bn(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    relu: bool = True,
) -> list[nn.Module]:
    """``[Conv2d ('same' padding), BatchNorm2d(, ReLU)]``: spliced into ``nn.Sequential`` by the callers.

    Returned as a list because the released key names index the layers of one flat Sequential
    (``conv.0``, ``conv.1``, ``conv.3`` ...); the parameter-free ReLU takes an index but adds no key.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(out_chs),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def kaiming_init_convs(model: nn.Module) -> None:
    """The zoo's conv init: N(0, 2 / (k*k*out_channels)), i.e. Kaiming-normal fan-out for ReLU; zero bias.

    BatchNorm keeps PyTorch's default (weight 1, bias 0), which is also what the originals set.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class CifarNet(nn.Module, ABC):
    """timm model API for a CIFAR backbone: global pool + linear head named as in the releases.

    A subclass builds its layers after ``super().__init__``, calls ``self.reset_classifier(num_classes)``
    last and implements ``forward_features``. The head lives in the attribute ``classifier_name``.
    Every family ends with a global average over the final feature map (the originals write it as
    ``AvgPool2d(8)``, ``avg_pool2d(x, 4)`` ... sized for 32 px inputs: the same numbers there).
    """

    classifier_name = "fc"

    def __init__(self, num_features: int, in_chans: int, global_pool: str = "avg") -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = num_features
        self.num_classes = 0
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)

    def make_classifier(self, num_classes: int) -> nn.Module:
        """A new head: a linear layer on the pooled features, or ``Identity`` for ``num_classes=0``."""
        in_features = self.num_features * self.global_pool.feat_mult()
        return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a freshly initialised one for ``num_classes`` (0 = no head)."""
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_classes = num_classes
        setattr(self, self.classifier_name, self.make_classifier(num_classes))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's API: recompute each stage's activations in backward instead of storing them.

        As in timm's own BatchNorm networks, a recomputed stage updates the BatchNorm running statistics a
        second time per step (train mode), so they differ slightly from a run without checkpointing.
        """
        self.grad_checkpointing = enable

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``stage(x)``, checkpointed (non-reentrant) when enabled and gradients are being recorded."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) images -> (B, num_features, H', W') final feature map, before pooling."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, H', W') -> pooled (B, num_features) if ``pre_logits`` else (B, num_classes)."""
        x = self.global_pool(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))
