"""vitkd.data.build_loaders: batch format, reproducibility, subsets, split choice, errors."""

from __future__ import annotations

import collections

import datasets
import pytest
import torch

from vitkd.data import DataConfig, build_eval_loader, build_loaders
from vitkd.data.synthetic import random_image_dataset, write_image_folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The session-wide cache also used by test_data_sources, so builtins convert once per session."""
    return str(tmp_path_factory.getbasetemp() / "vitkd_cache")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """The on-disk forms, each with 4 classes: 40 training and 12 evaluation 8×8 images."""
    root = tmp_path_factory.mktemp("loader_sources")
    train, test = random_image_dataset(4, 10, 8, seed=0), random_image_dataset(4, 3, 8, seed=1)
    hub_style = datasets.DatasetDict({"train": train, "test": test})
    hub_style.map(lambda row: {"coarse_label": row["label"] // 2}).rename_columns(
        {"image": "img", "label": "fine_label"}
    ).save_to_disk(root / "hub_style")
    write_image_folder(root / "imagefolder", splits=("train",), num_classes=4, per_class=10, size=8)
    write_image_folder(root / "imagefolder", splits=("test",), num_classes=4, per_class=3, size=8, seed=7)
    (root / "parquet").mkdir()
    train.to_parquet(root / "parquet" / "train-00000-of-00001.parquet")
    test.to_parquet(root / "parquet" / "test-00000-of-00001.parquet")
    unlabelled_test = test.map(lambda row: {"label": -1})
    datasets.DatasetDict({"train": train, "validation": test, "test": unlabelled_test}).save_to_disk(
        root / "dict"
    )
    datasets.DatasetDict({"train": train, "test": unlabelled_test}).save_to_disk(root / "no_eval")
    return {name: str(root / name) for name in ("hub_style", "imagefolder", "parquet", "dict", "no_eval")}


def config(source: str, **overrides) -> DataConfig:
    return DataConfig(**{"source": source, "num_workers": 0, **overrides})


@pytest.mark.parametrize("form", ["hub_style", "imagefolder", "parquet", "dict"])
def test_batches_have_the_promised_shapes_and_types(sources, cache_dir, form):
    train, evaluation, info = build_loaders(config(sources[form], cache_dir=cache_dir), batch_size=16)
    images, labels = next(iter(train))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert info.num_classes == 4 and info.image_size == 32 and info.in_chans == 3
    assert len(train) == 40 // 16  # drop_last
    assert sum(len(y) for _, y in evaluation) == 12  # every evaluation sample, in order, last batch kept


def test_two_view_batches(sources):
    train, _, _ = build_loaders(config(sources["dict"], two_view=True, transform="cifar"), batch_size=8)
    (weak, strong), labels = next(iter(train))
    assert weak.shape == strong.shape == (8, 3, 32, 32) and labels.shape == (8,)
    assert not torch.equal(weak, strong)


def first_batch(source: str, seed: int, **overrides):
    train, _, _ = build_loaders(config(source, **overrides), batch_size=8, seed=seed)
    return next(iter(train))


def test_same_seed_same_batch_including_augmentation_with_workers(sources):
    kwargs = {"num_workers": 2, "persistent_workers": False, "two_view": True}
    (weak_a, strong_a), labels_a = first_batch(sources["dict"], seed=3, **kwargs)
    (weak_b, strong_b), labels_b = first_batch(sources["dict"], seed=3, **kwargs)
    assert torch.equal(labels_a, labels_b)
    assert torch.equal(weak_a, weak_b) and torch.equal(strong_a, strong_b)


def test_seed_sets_the_order(sources):
    images_a, labels_a = first_batch(sources["dict"], seed=0, transform="none")
    images_b, labels_b = first_batch(sources["dict"], seed=0, transform="none")
    images_c, _ = first_batch(sources["dict"], seed=1, transform="none")
    assert torch.equal(labels_a, labels_b) and torch.equal(images_a, images_b)
    assert not torch.equal(images_a, images_c)


def test_train_fraction_is_stratified_and_seeded(sources):
    def subset(seed: int) -> datasets.Dataset:
        train, _, _ = build_loaders(config(sources["dict"], train_fraction=0.5), batch_size=4, seed=seed)
        return train.dataset.rows.with_format(None)  # raw rows, without the tensor transform

    first = subset(0)
    assert collections.Counter(first["label"]) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert first["image"] == subset(0)["image"]


def test_max_eval_samples(sources):
    _, evaluation, _ = build_loaders(config(sources["dict"], max_eval_samples=5), batch_size=4)
    assert len(evaluation.dataset) == 5
    assert sum(len(labels) for _, labels in evaluation) == 5


def test_eval_loader_alone_matches_the_pair(sources):
    cfg = config(sources["dict"], max_eval_samples=7)
    _, paired, paired_info = build_loaders(cfg, batch_size=4)
    alone, info = build_eval_loader(cfg, batch_size=4)
    assert info == paired_info
    for (images_a, labels_a), (images_b, labels_b) in zip(paired, alone, strict=True):
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def test_auto_eval_split_skips_unlabelled_test(sources):
    _, evaluation, _ = build_loaders(config(sources["dict"]), batch_size=4)
    assert evaluation.dataset.rows.with_format(None)["label"] == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        3,
    ]  # not test's -1


def test_no_labelled_eval_split_lists_splits(sources):
    with pytest.raises(
        ValueError, match=r"No labelled evaluation split.*available splits: \['test', 'train'\]"
    ):
        build_loaders(config(sources["no_eval"]), batch_size=4)
    with pytest.raises(ValueError, match=r"Split 'test' .* 12 of 12 samples without a label"):
        build_loaders(config(sources["no_eval"], eval_split="test"), batch_size=4)


def test_batch_size_errors(sources):
    with pytest.raises(ValueError, match="batch_size must be >= 2, got 1"):
        build_loaders(config(sources["dict"]), batch_size=1)
    with pytest.raises(
        ValueError, match=r"has 20 samples \(train_fraction=0.5\), fewer than one batch of batch_size=32"
    ):
        build_loaders(config(sources["dict"], train_fraction=0.5), batch_size=32)


def test_fashion_mnist_loaders(cache_dir):
    train, evaluation, info = build_loaders(
        config("fashion_mnist", cache_dir=cache_dir, in_chans=1), batch_size=64
    )
    images, labels = next(iter(train))
    assert images.shape == (64, 1, 32, 32)
    assert (len(train), len(evaluation.dataset)) == (60_000 // 64, 10_000)
    assert info.class_names[0] == "T-shirt/top" and info.num_classes == 10
