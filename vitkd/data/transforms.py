"""Image pipelines for the transform presets, and the batched function ``Dataset.with_transform`` runs.

Presets (``DataConfig.transform``), all ending in a float32 tensor [C, H, W] normalised with the
config's mean/std, with images first converted to RGB (``in_chans=3``) or grayscale (``in_chans=1``):

* ``cifar``: train = RandomCrop(size, zero padding size/8, i.e. 4 px at 32 px) + horizontal flip;
  eval = tensor + normalise.
* ``autoaugment``: ``cifar`` train + torchvision's AutoAugment (CIFAR10 policy); eval as ``cifar``.
* ``imagenet``: timm's ``create_transform`` — train RandomResizedCrop + flip (no colour jitter, as in the
  paper's ImageNet recipe); eval Resize(size / 0.875) + CenterCrop(size).
* ``none``: tensor + normalise for training and evaluation alike.

Images of another size are first resized (shorter side, bilinear) and centre-cropped to the target size,
e.g. Fashion-MNIST 28 px → 32 px or CIFAR 32 px → 224 px for a ViT student; the imagenet preset's crops
do this on their own. Two-view mode (CRLD, methods.md §4) adds a strong view per training sample: the
same augmentation, drawn independently, then RandAugment (2 ops, magnitude drawn per sample) and Cutout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image
from timm.data import DEFAULT_CROP_PCT, create_transform
from torchvision.transforms import v2

from vitkd.data.config import DataConfig


class Cutout(torch.nn.Module):
    """Zero a random square of an image tensor [..., H, W] (DeVries & Taylor, 2017).

    The side is uniform in 1..``max_fraction``·min(H, W) pixels and the centre uniform over the image, so
    near an edge part of the square falls outside and is clipped. Written here because torchvision's
    ``RandomErasing`` is a different distribution: it samples a rectangle by area and aspect ratio,
    only where it fits entirely, and with a probability. Applied after normalisation, zero is the
    dataset's mean colour.
    """

    def __init__(self, max_fraction: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"Cutout max_fraction must be in (0, 1], got {max_fraction!r}")
        self.max_fraction = max_fraction

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        max_side = max(1, int(self.max_fraction * min(height, width)))
        side = int(torch.randint(1, max_side + 1, ()))
        top = int(torch.randint(height, ())) - side // 2
        left = int(torch.randint(width, ())) - side // 2
        out = image.clone()
        out[..., max(top, 0) : top + side, max(left, 0) : left + side] = 0  # slicing clips the far edges
        return out


class RandAugmentRandomMagnitude(v2.RandAugment):
    """torchvision's RandAugment with its magnitude bin drawn per call, uniform in 1..num_magnitude_bins-1.

    FixMatch-style strong augmentation (used by CRLD) varies the magnitude per sample instead of fixing it;
    torchvision's class takes one fixed magnitude, so it is re-drawn here before each call (bin 0, the
    identity, is excluded).
    """

    def forward(self, *inputs: Any) -> Any:
        self.magnitude = int(torch.randint(1, self.num_magnitude_bins, ()))
        return super().forward(*inputs)


class TrainStages(NamedTuple):
    """A training pipeline in two halves, so the strong view can insert its ops between them."""

    augment: list[Callable]  # PIL image → PIL image, random
    finish: list[Callable]  # PIL image → normalised float32 tensor [C, H, W]


def _resize_to(size: int) -> list[Callable]:
    return [v2.Resize(size), v2.CenterCrop(size)]


def _normalised_tensor(cfg: DataConfig) -> list[Callable]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(cfg.effective_mean), list(cfg.effective_std)),
        v2.ToPureTensor(),
    ]


INTERPOLATION = "bilinear"  # of every resize, in training and evaluation


def eval_crop(cfg: DataConfig) -> tuple[float, str, str]:
    """(crop_pct, crop_mode, interpolation) of :func:`eval_pipeline`, in timm's data-config terms."""
    return (DEFAULT_CROP_PCT if cfg.transform == "imagenet" else 1.0), "center", INTERPOLATION


def _timm_transform(cfg: DataConfig, *, is_training: bool) -> Any:
    size = cfg.effective_image_size
    return create_transform(
        input_size=(cfg.in_chans, size, size),
        is_training=is_training,
        color_jitter=None,
        interpolation=INTERPOLATION,
        crop_pct=DEFAULT_CROP_PCT,
        mean=cfg.effective_mean,
        std=cfg.effective_std,
        separate=is_training,
    )


def train_stages(cfg: DataConfig) -> TrainStages:
    """The preset's training pipeline (the weak view in two-view mode)."""
    if cfg.transform == "imagenet":
        crop_and_flip, _empty_colour_stage, to_tensor = _timm_transform(cfg, is_training=True)
        return TrainStages([crop_and_flip], [to_tensor])
    size = cfg.effective_image_size
    augment = _resize_to(size)
    if cfg.transform in ("cifar", "autoaugment"):
        augment += [v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]
    if cfg.transform == "autoaugment":
        augment.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    return TrainStages(augment, _normalised_tensor(cfg))


def eval_pipeline(cfg: DataConfig) -> Callable:
    """Deterministic PIL image → normalised float32 tensor [C, H, W] for evaluation."""
    if cfg.transform == "imagenet":
        return _timm_transform(cfg, is_training=False)
    return v2.Compose(_resize_to(cfg.effective_image_size) + _normalised_tensor(cfg))


def train_views(cfg: DataConfig) -> tuple[Callable, ...]:
    """One pipeline per view: (train,) or, with ``cfg.two_view``, (weak, strong)."""
    stages = train_stages(cfg)
    weak = v2.Compose([*stages.augment, *stages.finish])
    if not cfg.two_view:
        return (weak,)
    strong = v2.Compose([*stages.augment, RandAugmentRandomMagnitude(num_ops=2), *stages.finish, Cutout(0.5)])
    return weak, strong


class ImageLabelTransform:
    """Batched function for ``Dataset.with_transform`` over the ``image``/``label`` columns.

    Maps ``{"image": [PIL], "label": [int]}`` to ``{"image": [tensor [C, H, W]], "label": [int]}``; with
    several views each image becomes a tuple of tensors, one per view. A class (not a closure) so that
    DataLoader workers can pickle it under the ``spawn`` start method.
    """

    def __init__(self, views: Sequence[Callable], in_chans: int) -> None:
        self.views = tuple(views)
        self.mode = "RGB" if in_chans == 3 else "L"

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [self._convert(img) for img in batch["image"]]
        if len(self.views) == 1:
            out = [self.views[0](img) for img in images]
        else:
            out = [tuple(view(img) for view in self.views) for img in images]
        return {"image": out, "label": batch["label"]}

    def _convert(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)


def build_transforms(cfg: DataConfig) -> tuple[ImageLabelTransform, ImageLabelTransform]:
    """(train, eval) batched transforms for ``Dataset.with_transform``."""
    train = ImageLabelTransform(train_views(cfg), cfg.in_chans)
    return train, ImageLabelTransform((eval_pipeline(cfg),), cfg.in_chans)
