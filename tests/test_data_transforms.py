"""vitkd.data transforms and DataConfig validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkd.data import DataConfig
from vitkd.data.config import CIFAR100_MEAN, CIFAR100_STD
from vitkd.data.synthetic import random_images
from vitkd.data.transforms import Cutout, ImageLabelTransform, RandAugmentRandomMagnitude, build_transforms


def rgb_image(size: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_images(1, 1, size, seed=seed)[0])


def gray_image(size: int = 28, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_images(1, 1, size, seed=seed, channels=1)[0])


def apply(transform: ImageLabelTransform, image: Image.Image):
    return transform({"image": [image], "label": [0]})["image"][0]


def test_cifar_eval_is_exactly_scale_and_normalise():
    image = rgb_image()
    _, evaluate = build_transforms(DataConfig("x"))
    expected = (np.asarray(image, np.float32) / 255 - np.array(CIFAR100_MEAN)) / np.array(CIFAR100_STD)
    out = apply(evaluate, image)
    assert out.dtype == torch.float32 and type(out) is torch.Tensor
    np.testing.assert_allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_single_channel_keeps_luminance():
    image = rgb_image()
    _, evaluate = build_transforms(DataConfig("x", in_chans=1, mean=(0.5,), std=(0.25,)))
    expected = (np.asarray(image.convert("L"), np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(apply(evaluate, image).numpy()[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("transform", "in_chans", "image_size", "shape"),
    [
        ("cifar", 3, None, (3, 32, 32)),
        ("cifar", 1, None, (1, 32, 32)),
        ("autoaugment", 3, None, (3, 32, 32)),
        ("autoaugment", 1, None, (1, 32, 32)),
        ("none", 3, 40, (3, 40, 40)),
        ("imagenet", 3, None, (3, 224, 224)),
        ("imagenet", 1, 64, (1, 64, 64)),
    ],
)
def test_grayscale_28px_becomes_requested_shape(transform, in_chans, image_size, shape):
    train, evaluate = build_transforms(
        DataConfig("x", transform=transform, in_chans=in_chans, image_size=image_size)
    )
    assert apply(train, gray_image()).shape == shape
    assert apply(evaluate, gray_image()).shape == shape


def test_preset_statistics():
    assert DataConfig("x").effective_mean == CIFAR100_MEAN
    assert DataConfig("x", transform="imagenet").effective_std == (0.229, 0.224, 0.225)
    assert DataConfig("x", in_chans=1).effective_mean == pytest.approx((sum(CIFAR100_MEAN) / 3,))
    assert DataConfig("x", transform="imagenet").effective_image_size == 224


def test_cifar_crop_pads_by_an_eighth_of_the_side():
    """A white image: after RandomCrop(64, padding 8) the black (zero-padded) border is at most 8 px wide."""
    torch.manual_seed(0)
    train, _ = build_transforms(DataConfig("x", image_size=64, mean=(0, 0, 0), std=(1, 1, 1)))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    widest = 0
    for _ in range(30):
        out = apply(train, white)[0]
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        black_rows = int((out.sum(dim=1) == 0).sum())
        black_cols = int((out.sum(dim=0) == 0).sum())
        widest = max(widest, black_rows, black_cols)
    assert 4 < widest <= 8


def test_cutout_zeroes_one_clipped_square_up_to_half_the_side():
    torch.manual_seed(0)
    cutout = Cutout(0.5)
    sides = set()
    for _ in range(200):
        zeroed = cutout(torch.ones(3, 32, 32)) == 0
        assert (zeroed == zeroed[0]).all()  # all channels alike
        rows, cols = zeroed[0].any(dim=1).nonzero(), zeroed[0].any(dim=0).nonzero()
        height, width = len(rows), len(cols)
        assert 1 <= height <= 16 and 1 <= width <= 16
        assert zeroed[0].sum() == height * width  # one solid rectangle
        assert rows.max() - rows.min() + 1 == height and cols.max() - cols.min() + 1 == width
        if 0 < rows.min() and rows.max() < 31 and 0 < cols.min() and cols.max() < 31:
            assert height == width  # away from the borders it is a square
            sides.add(height)
    assert len(sides) > 5  # the side is random


def test_randaugment_magnitude_is_drawn_per_sample():
    torch.manual_seed(0)
    augment = RandAugmentRandomMagnitude(num_ops=2)
    magnitudes = set()
    for _ in range(50):
        augment(rgb_image())
        magnitudes.add(augment.magnitude)
    assert min(magnitudes) >= 1 and max(magnitudes) <= augment.num_magnitude_bins - 1
    assert len(magnitudes) > 10


@pytest.mark.parametrize("transform", ["cifar", "imagenet"])
def test_two_view_gives_two_differently_augmented_tensors(transform):
    torch.manual_seed(0)
    train, _ = build_transforms(DataConfig("x", transform=transform, image_size=32, two_view=True))
    weak, strong = apply(train, rgb_image())
    assert weak.shape == strong.shape == (3, 32, 32)
    assert not torch.equal(weak, strong)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"transform": "randaug"},
            r"data.transform must be one of \['autoaugment', 'cifar', 'imagenet', 'none'\]",
        ),
        ({"train_fraction": 0.0}, r"data.train_fraction must be in \(0, 1\]"),
        ({"train_fraction": 1.5}, r"data.train_fraction must be in \(0, 1\]"),
        ({"in_chans": 2}, "data.in_chans must be 1 or 3"),
        ({"mean": (0.5,)}, r"data.mean needs one value per channel \(in_chans=3\)"),
        ({"std": (1.0, 0.0, 1.0)}, "data.std must be positive"),
        ({"image_size": 0}, "data.image_size must be a positive int"),
        ({"max_eval_samples": 0}, "data.max_eval_samples must be >= 1"),
        ({"num_workers": -1}, "data.num_workers must be >= 0"),
        ({"source": ""}, "data.source must be a non-empty string"),
    ],
)
def test_config_errors_name_field_and_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**{"source": "x", **kwargs})


def test_config_accepts_yaml_lists():
    cfg = DataConfig("x", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.effective_std == (0.2, 0.2, 0.2)
