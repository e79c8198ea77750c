"""Random-pixel labelled images, in memory or as an image folder, for tests, benchmarks and smoke runs."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image


def random_images(
    num_classes: int, per_class: int, size: int, *, seed: int = 0, channels: int = 3
) -> np.ndarray:
    """uint8 noise [num_classes · per_class, size, size, channels] (channels 3) or [N, size, size] (1)."""
    shape = (num_classes * per_class, size, size) + ((channels,) if channels == 3 else ())
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def class_names(num_classes: int) -> list[str]:
    return [f"class_{k}" for k in range(num_classes)]


def random_image_dataset(
    num_classes: int, per_class: int, size: int, *, seed: int = 0, channels: int = 3
) -> datasets.Dataset:
    """Dataset with ``image`` (Image) and ``label`` (ClassLabel ``class_0``…), classes in blocks."""
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names(num_classes))}
    )
    images = random_images(num_classes, per_class, size, seed=seed, channels=channels)
    labels = np.repeat(np.arange(num_classes), per_class)
    return datasets.Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)


def write_image_folder(
    root: str | Path,
    *,
    splits: tuple[str, ...] = ("train",),
    num_classes: int,
    per_class: int,
    size: int,
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write noise images as ``root/<split>/<class_k>/<i><suffix>``, a new draw per split; return root."""
    root = Path(root)
    for offset, split in enumerate(splits):
        images = random_images(num_classes, per_class, size, seed=seed + offset)
        for index, image in enumerate(images):
            folder = root / split / class_names(num_classes)[index // per_class]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index}{suffix}")
    return root
