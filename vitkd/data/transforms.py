"""Image pipelines for the transform presets: the per-sample seeded training augmenter and the evaluation transform.

Presets (``DataConfig.transform``), all ending in a float32 tensor [C, H, W] normalised with the
config's mean/std, with images first converted to RGB (``in_chans=3``) or grayscale (``in_chans=1``):

* ``cifar``: train = RandomCrop(size, zero padding size/8, i.e. 4 px at 32 px) + horizontal flip;
  eval = tensor + normalise.
* ``autoaugment``: ``cifar`` train + torchvision's AutoAugment (CIFAR10 policy); eval as ``cifar``.
* ``imagenet``: timm's ``create_transform`` — train RandomResizedCrop + flip, then what the ``data``
  keys add (RandAugment/AutoAugment, colour jitter, random erasing; none by default, as in the paper's
  ImageNet recipe); eval Resize(size / 0.875) + CenterCrop(size).
* ``none``: tensor + normalise for training and evaluation alike.

Images of another size are first resized (shorter side, bilinear) and centre-cropped to the target size,
e.g. Fashion-MNIST 28 px → 32 px or CIFAR 32 px → 224 px for a ViT student; the imagenet preset's crops
do this on their own. Two-view mode (CRLD, docs/methods.md §4) adds a strong view per training sample: the
same augmentation, drawn independently, then the CRLD authors' RandAugment + Cutout
(:class:`CRLDStrongAugment`, parameters in ``data.strong_aug``).

Deterministic augmentation: every random draw of a training view comes from a seed derived from
(seed, epoch, sample index, view, repeat) (:func:`sample_seed`), not from the process's RNG stream, so
sample *i*'s augmented image in epoch *e* is the same for any worker count, process count, batch size,
order, or after a resume. torchvision's v2 transforms draw from torch's global generator and timm's from
Python's ``random`` and numpy, so each view runs under :func:`seeded_rngs`, which seeds all three and
restores their previous states afterwards (training in the same process keeps its own stream).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from timm.data import DEFAULT_CROP_PCT, create_transform
from timm.data import auto_augment as aa
from torchvision.transforms import v2

from vitkd.data.config import DataConfig, StrongAugConfig


class SampleKey(NamedTuple):
    """What a training sample's augmentation depends on: 0-based epoch, dataset row, repeat number.

    ``repeat`` numbers the copies of a sample within one epoch under repeated augmentation (0 otherwise).
    """

    epoch: int
    index: int
    repeat: int = 0


def sample_seed(seed: int, key: SampleKey, view: int) -> int:
    """A 64-bit seed for one view of one sample, mixed from (seed, epoch, index, view, repeat).

    numpy's ``SeedSequence`` does the mixing (a hash designed for seeding), so neighbouring keys give
    unrelated streams. All inputs must be >= 0.
    """
    words = np.random.SeedSequence([seed, key.epoch, key.index, view, key.repeat]).generate_state(2)
    return int(words[0]) | int(words[1]) << 32


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, Python's ``random`` and numpy's global RNG with ``seed`` (64-bit);
    restore all three states on exit.

    Only the CPU generator is touched (``torch.manual_seed`` would also re-seed every CUDA generator,
    which dropout on the GPU draws from when the loader runs in the main process).
    """
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed([seed & 0xFFFF_FFFF, seed >> 32])  # numpy's legacy seeding takes 32-bit words
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


_NEAREST = {"resample": Image.NEAREST}

# CRLD's strong-augmentation ops as (PIL image, value) -> PIL image, module-level so workers can pickle them
_STRONG_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "auto_contrast": lambda img, _: aa.auto_contrast(img),
    "brightness": aa.brightness,
    "color": aa.color,
    "contrast": aa.contrast,
    "equalize": lambda img, _: aa.equalize(img),
    "identity": lambda img, _: img,
    "posterize": lambda img, v: aa.posterize(img, int(v)),
    "rotate": lambda img, v: aa.rotate(img, v, **_NEAREST),
    "sharpness": aa.sharpness,
    "shear_x": lambda img, v: aa.shear_x(img, v, **_NEAREST),
    "shear_y": lambda img, v: aa.shear_y(img, v, **_NEAREST),
    "solarize": aa.solarize,
    "translate_x": lambda img, v: aa.translate_x_rel(img, v, **_NEAREST),
    "translate_y": lambda img, v: aa.translate_y_rel(img, v, **_NEAREST),
}


class CRLDStrongAugment:
    """PIL image → PIL image: the CRLD authors' strong augmentation (FixMatch-style RandAugment + Cutout).

    See :class:`~vitkd.data.config.StrongAugConfig` for the distribution. Written here because neither
    torchvision's nor timm's RandAugment draws it: both tie every op to one shared magnitude (torchvision
    a fixed bin, timm a Gaussian around it), apply each op with a probability, and use other ranges
    (e.g. enhancement factors 0.1–1.9). The operations themselves are timm's PIL functions, called with
    nearest-neighbour resampling and black fill, as the authors' PIL calls default to. Draws come from
    Python's ``random`` and numpy, like the authors' code (both seeded per sample by :func:`seeded_rngs`).
    """

    def __init__(self, cfg: StrongAugConfig) -> None:
        self.cfg = cfg
        factor, deg, shear, shift = cfg.enhance, cfg.rotate, cfg.shear, cfg.translate
        # the range each op's value is drawn from, uniformly (ops without a value ignore it)
        self.ranges: dict[str, tuple[float, float]] = {
            "auto_contrast": (0, 1), "brightness": factor, "color": factor, "contrast": factor,
            "equalize": (0, 1), "identity": (0, 1), "posterize": cfg.posterize, "rotate": (-deg, deg),
            "sharpness": factor, "shear_x": (-shear, shear), "shear_y": (-shear, shear), "solarize": (0, 256),
            "translate_x": (-shift, shift), "translate_y": (-shift, shift),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg})"

    def __call__(self, image: Image.Image) -> Image.Image:
        for name in random.choices(list(self.ranges), k=self.cfg.num_ops):
            low, high = self.ranges[name]
            image = _STRONG_OPS[name](image, low + (high - low) * random.random())
        return self._cutout(image, random.random() * self.cfg.cutout * image.size[0])

    def _cutout(self, image: Image.Image, side: float) -> Image.Image:
        """Fill a square of ``side`` px. Its centre is drawn as the authors' ``np.random.uniform(w)`` draws
        it: low=w, high=1 (the default), so uniform between 1 and w. The square is clipped at the top/left
        edge by moving its corner, at the bottom/right by cutting it, as in their code."""
        width, height = image.size
        left = int(max(0.0, np.random.uniform(width) - side / 2))
        top = int(max(0.0, np.random.uniform(height) - side / 2))
        fill = self.cfg.cutout_fill if image.mode == "RGB" else round(sum(self.cfg.cutout_fill) / 3)
        image = image.copy()
        ImageDraw.Draw(image).rectangle((left, top, min(width, left + side), min(height, top + side)), fill)
        return image


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


def eval_crop(cfg: DataConfig) -> tuple[float, str, str]:
    """(crop_pct, crop_mode, interpolation) of :func:`eval_pipeline`, in timm's data-config terms.

    Every resize uses ``cfg.interpolation`` (bilinear unless the imagenet preset's recipe says otherwise).
    """
    return (DEFAULT_CROP_PCT if cfg.transform == "imagenet" else 1.0), "center", cfg.interpolation


def _timm_transform(cfg: DataConfig, *, is_training: bool) -> Any:
    size = cfg.effective_image_size
    return create_transform(
        input_size=(cfg.in_chans, size, size),
        is_training=is_training,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob,
        re_mode=cfg.re_mode,
        re_count=cfg.re_count,
        interpolation=cfg.interpolation,
        crop_pct=DEFAULT_CROP_PCT,
        mean=cfg.effective_mean,
        std=cfg.effective_std,
        separate=is_training,
    )


def train_stages(cfg: DataConfig) -> TrainStages:
    """The preset's training pipeline (the weak view in two-view mode)."""
    if cfg.transform == "imagenet":
        crop_and_flip, auto_augment_or_jitter, to_tensor_and_erase = _timm_transform(cfg, is_training=True)
        return TrainStages([crop_and_flip, auto_augment_or_jitter], [to_tensor_and_erase])
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
    strong = v2.Compose([*stages.augment, CRLDStrongAugment(cfg.strong_aug), *stages.finish])
    return weak, strong


class SampleAugmenter:
    """(PIL image, :class:`SampleKey`) → one tensor [C, H, W] per view, each view drawn under its own seed.

    A class (not a closure) so that DataLoader workers can pickle it under the ``spawn`` start method.
    """

    def __init__(self, views: Sequence[Callable], in_chans: int, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"the augmentation seed (train.seed) must be >= 0, got {seed}")
        self.views = tuple(views)
        self.mode = "RGB" if in_chans == 3 else "L"
        self.seed = seed

    def __call__(self, image: Image.Image, key: SampleKey) -> tuple[torch.Tensor, ...]:
        image = image if image.mode == self.mode else image.convert(self.mode)
        out = []
        for view, pipeline in enumerate(self.views):
            with seeded_rngs(sample_seed(self.seed, key, view)):
                out.append(pipeline(image))
        return tuple(out)


class ImageLabelTransform:
    """Batched function for ``Dataset.with_transform`` over the ``image``/``label`` columns (evaluation).

    Maps ``{"image": [PIL], "label": [int]}`` to ``{"image": [tensor [C, H, W]], "label": [int]}`` with one
    deterministic pipeline. A class (not a closure) so that DataLoader workers can pickle it.
    """

    def __init__(self, pipeline: Callable, in_chans: int) -> None:
        self.pipeline = pipeline
        self.mode = "RGB" if in_chans == 3 else "L"

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [img if img.mode == self.mode else img.convert(self.mode) for img in batch["image"]]
        return {"image": [self.pipeline(img) for img in images], "label": batch["label"]}


def build_transforms(cfg: DataConfig, seed: int = 0) -> tuple[SampleAugmenter, ImageLabelTransform]:
    """(train augmenter seeded with ``seed``, eval batched transform for ``Dataset.with_transform``)."""
    train = SampleAugmenter(train_views(cfg), cfg.in_chans, seed)
    return train, ImageLabelTransform(eval_pipeline(cfg), cfg.in_chans)
