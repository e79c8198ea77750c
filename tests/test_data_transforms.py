"""vitkd.data transforms and DataConfig validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkd.data import DataConfig, transforms
from vitkd.data.config import CIFAR100_MEAN, CIFAR100_STD, StrongAugConfig
from vitkd.data.synthetic import random_images
from vitkd.data.transforms import (
    CRLDStrongAugment,
    ImageLabelTransform,
    SampleKey,
    build_transforms,
    seeded_rngs,
)


def rgb_image(size: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_images(1, 1, size, seed=seed)[0])


def gray_image(size: int = 28, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_images(1, 1, size, seed=seed, channels=1)[0])


def apply(transform: ImageLabelTransform, image: Image.Image):
    return transform({"image": [image], "label": [0]})["image"][0]


def augment(train, image: Image.Image, index: int = 0, epoch: int = 0) -> torch.Tensor:
    """The first (or only) view of a training sample."""
    return train(image, SampleKey(epoch, index))[0]


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
    assert augment(train, gray_image()).shape == shape
    assert apply(evaluate, gray_image()).shape == shape


def test_preset_statistics():
    assert DataConfig("x").effective_mean == CIFAR100_MEAN
    assert DataConfig("x", transform="imagenet").effective_std == (0.229, 0.224, 0.225)
    assert DataConfig("x", in_chans=1).effective_mean == pytest.approx((sum(CIFAR100_MEAN) / 3,))
    assert DataConfig("x", transform="imagenet").effective_image_size == 224


def test_cifar_crop_pads_by_an_eighth_of_the_side():
    """A white image: after RandomCrop(64, padding 8) the black (zero-padded) border is at most 8 px wide."""
    train, _ = build_transforms(DataConfig("x", image_size=64, mean=(0, 0, 0), std=(1, 1, 1)))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    widest = 0
    for index in range(30):
        out = augment(train, white, index)[0]
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        black_rows = int((out.sum(dim=1) == 0).sum())
        black_cols = int((out.sum(dim=0) == 0).sum())
        widest = max(widest, black_rows, black_cols)
    assert 4 < widest <= 8


def test_strong_augment_draws_each_op_value_from_its_range(monkeypatch):
    """CRLD's strong view: num_ops ops drawn with replacement, each with its own uniform value."""
    import random

    cfg = StrongAugConfig(num_ops=3, enhance=(0.05, 0.95), rotate=30, shear=0.3, translate=0.3, cutout=0.0)
    values: dict[str, list[float]] = {}
    calls = []
    for name in transforms._STRONG_OPS:
        monkeypatch.setitem(transforms._STRONG_OPS, name, lambda img, v, n=name: values.setdefault(n, []).append(v) or img)
    augment = CRLDStrongAugment(cfg)
    random.seed(0)
    for _ in range(400):
        before = sum(len(v) for v in values.values())
        augment(rgb_image())
        calls.append(sum(len(v) for v in values.values()) - before)
    assert set(calls) == {3} and len(values) == 14
    expected = {"brightness": (0.05, 0.95), "rotate": (-30, 30), "shear_x": (-0.3, 0.3), "translate_y": (-0.3, 0.3),
                "solarize": (0, 256), "posterize": (4, 8)}
    for name, (low, high) in expected.items():
        drawn = values[name]
        assert low <= min(drawn) and max(drawn) <= high
        assert max(drawn) - min(drawn) > 0.6 * (high - low)  # spread over the range, not one magnitude


def test_strong_augment_cutout_is_a_grey_square_up_to_half_the_side():
    import random

    augment = CRLDStrongAugment(StrongAugConfig(num_ops=0, cutout=0.5))
    black = Image.new("RGB", (32, 32))
    sides = set()
    random.seed(0), np.random.seed(0)
    for _ in range(100):
        out = np.asarray(augment(black))
        filled = (out == (125, 123, 114)).all(axis=2)
        assert filled.sum() + (out == 0).all(axis=2).sum() == 32 * 32  # only the fill colour was drawn
        rows, cols = filled.any(axis=1).nonzero()[0], filled.any(axis=0).nonzero()[0]
        if len(rows):
            assert filled.sum() == len(rows) * len(cols) and len(rows) <= 17 and len(cols) <= 17
            sides.add(len(cols))
    assert len(sides) > 8
    gray = np.asarray(CRLDStrongAugment(StrongAugConfig(num_ops=0, cutout=1.0))(Image.new("L", (32, 32))))
    assert set(np.unique(gray)) <= {0, 121}


def test_strong_aug_config_errors():
    with pytest.raises(ValueError, match=r"data.strong_aug.enhance must be \[low, high\]"):
        StrongAugConfig(enhance=(0.9, 0.1))
    with pytest.raises(ValueError, match=r"data.strong_aug.cutout must be in \[0, 1\]"):
        StrongAugConfig(cutout=2)


@pytest.mark.parametrize("transform", ["cifar", "imagenet"])
def test_two_view_gives_two_differently_augmented_tensors(transform):
    train, _ = build_transforms(DataConfig("x", transform=transform, image_size=32, two_view=True))
    weak, strong = train(rgb_image(), SampleKey(0, 0))
    assert weak.shape == strong.shape == (3, 32, 32)
    assert not torch.equal(weak, strong)


@pytest.mark.parametrize("transform", ["cifar", "autoaugment", "imagenet"])
def test_a_sample_key_fixes_the_augmentation(transform):
    """torchvision draws from torch, timm from random/numpy: all three are seeded per key."""
    import random

    train, _ = build_transforms(DataConfig("x", transform=transform, image_size=32, two_view=True), seed=1)
    image = rgb_image()
    first = train(image, SampleKey(3, 7))
    torch.rand(5), random.random(), np.random.rand()  # the callers' streams move on between calls
    again = train(image, SampleKey(3, 7))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    others = [train(image, key)[0] for key in (SampleKey(4, 7), SampleKey(3, 8), SampleKey(3, 7, repeat=1))]
    assert all(not torch.equal(first[0], other) for other in others)
    seed_2, _ = build_transforms(DataConfig("x", transform=transform, image_size=32, two_view=True), seed=2)
    assert not torch.equal(first[0], seed_2(image, SampleKey(3, 7))[0])


def test_seeded_rngs_restores_torch_random_and_numpy():
    import random

    before = torch.rand(1), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = torch.rand(1), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    with seeded_rngs(2**40 + 5):
        inside = torch.rand(1), random.random(), np.random.rand()
    with seeded_rngs(2**40 + 5):
        assert (torch.rand(1), random.random(), np.random.rand()) == inside
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
    assert inside != expected and before != expected


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
