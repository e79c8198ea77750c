"""vitkd.data sources: every on-disk form, the builtins, column/split resolution, offline behaviour."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest

from vitkd.data import DatasetUnavailableError, builtin, hub_datasets, load_dataset, load_splits
from vitkd.data.synthetic import random_image_dataset, write_image_folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache per test session (shared by the data test modules), so builtins convert once."""
    return str(tmp_path_factory.getbasetemp() / "vitkd_cache")


def hub_style(per_class: int, seed: int) -> datasets.Dataset:
    """CIFAR-100-like columns: ``img``, ``fine_label`` (4 classes) and ``coarse_label`` (2 classes)."""
    ds = random_image_dataset(4, per_class, 8, seed=seed).rename_columns(
        {"image": "img", "label": "fine_label"}
    )
    coarse = [label % 2 for label in ds["fine_label"]]
    return ds.add_column("coarse_label", coarse).cast_column(
        "coarse_label", datasets.ClassLabel(names=["even", "odd"])
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """Tiny datasets in every supported on-disk form, keyed by form."""
    root = tmp_path_factory.mktemp("sources")
    datasets.DatasetDict({"train": hub_style(6, 0), "test": hub_style(2, 1)}).save_to_disk(root / "hub_style")
    random_image_dataset(3, 5, 8).save_to_disk(root / "single")
    write_image_folder(root / "folder", splits=("train", "val"), num_classes=3, per_class=4, size=8)
    (root / "parquet").mkdir()
    random_image_dataset(5, 4, 8, seed=2).to_parquet(root / "parquet" / "train-00000.parquet")
    random_image_dataset(5, 2, 8, seed=3).to_parquet(root / "parquet" / "test.parquet")
    return {
        "hub_style": str(root / "hub_style"),
        "save_to_disk_dataset": str(root / "single"),
        "imagefolder": str(root / "folder"),
        "parquet_dir": str(root / "parquet"),
        "parquet_file": str(root / "parquet" / "train-00000.parquet"),
        "parquet_glob": str(root / "parquet" / "*.parquet"),
    }


@pytest.mark.parametrize(
    ("form", "num_classes", "num_rows"),
    [
        ("hub_style", 4, 24),
        ("save_to_disk_dataset", 3, 15),
        ("imagefolder", 3, 12),
        ("parquet_dir", 5, 20),
        ("parquet_file", 5, 20),
        ("parquet_glob", 5, 20),
    ],
)
def test_every_form_loads_as_image_and_label(sources, cache_dir, form, num_classes, num_rows):
    ds = load_dataset(sources[form], "train", cache_dir=cache_dir)
    assert ds.column_names == ["image", "label"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].num_classes == num_classes
    assert len(ds) == num_rows
    assert ds[0]["image"].size == (8, 8)
    assert sorted(set(ds["label"])) == list(range(num_classes))


def test_parquet_split_comes_from_file_name(sources, cache_dir):
    assert len(load_dataset(sources["parquet_glob"], "test", cache_dir=cache_dir)) == 10


def test_fine_label_preferred_coarse_selectable(sources):
    fine = load_dataset(sources["hub_style"], "train")
    coarse = load_dataset(sources["hub_style"], "train", label_column="coarse_label")
    assert fine.features["label"].num_classes == 4
    assert coarse.features["label"].names == ["even", "odd"]
    assert coarse["label"] == [label % 2 for label in fine["label"]]


@pytest.mark.parametrize("alias", ["val", "valid", "validation"])
def test_validation_split_aliases(sources, cache_dir, alias):
    assert len(load_dataset(sources["imagefolder"], alias, cache_dir=cache_dir)) == 12


def test_unknown_split_lists_available(sources):
    with pytest.raises(ValueError, match=r"Split 'dev2' not found.*\['test', 'train'\]"):
        load_dataset(sources["hub_style"], "dev2")


def _saved(tmp_path, splits: dict[str, datasets.Dataset]) -> str:
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "ds")
    return str(tmp_path / "ds")


def test_ambiguous_label_columns_are_listed(tmp_path):
    ds = random_image_dataset(2, 3, 8).rename_column("label", "a")
    ds = ds.add_column("b", ds["a"]).cast_column("b", ds.features["a"])
    with pytest.raises(ValueError, match=r"several candidates \['a', 'b'\].*label_column.*image \(Image\)"):
        load_dataset(_saved(tmp_path, {"train": ds}), "train")


def test_missing_label_column_lists_columns(tmp_path):
    ds = random_image_dataset(2, 3, 8).remove_columns("label").add_column("caption", ["x"] * 6)
    with pytest.raises(
        ValueError, match=r"no ClassLabel or integer column.*image \(Image\), caption \(Value\)"
    ):
        load_dataset(_saved(tmp_path, {"train": ds}), "train")


def test_label_column_override_must_name_a_label_column(sources):
    with pytest.raises(
        ValueError, match=r"data.label_column 'nope'.*img \(Image\), fine_label \(ClassLabel\)"
    ):
        load_dataset(sources["hub_style"], "train", label_column="nope")


def test_integer_labels_become_class_labels_consistent_across_splits(tmp_path):
    train = random_image_dataset(5, 2, 8).cast_column("label", datasets.Value("int64"))
    test = random_image_dataset(3, 2, 8).cast_column("label", datasets.Value("int64"))  # lacks classes 3, 4
    source = _saved(tmp_path, {"train": train, "test": test})
    loaded = load_splits(source, ["train", "test"])
    assert loaded["train"].features["label"].names == ["0", "1", "2", "3", "4"]
    assert loaded["test"].features["label"] == loaded["train"].features["label"]
    assert loaded["test"]["label"] == test["label"]


def test_unlabelled_split_is_rejected(tmp_path):
    labelled = random_image_dataset(2, 3, 8)
    unlabelled = labelled.map(lambda row: {"label": -1})
    with pytest.raises(ValueError, match=r"Split 'test' .* 6 of 6 samples without a label"):
        load_dataset(_saved(tmp_path, {"train": labelled, "test": unlabelled}), "test")


def test_path_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="holds no dataset"):
        load_dataset(str(tmp_path), "train")
    with pytest.raises(ValueError, match="not a usable dataset"):
        load_dataset(str(tmp_path / "missing.parquet"), "train")


def test_fashion_mnist_from_debian_files(cache_dir):
    train = load_dataset("fashion_mnist", "train", cache_dir=cache_dir)
    test = load_dataset("fashion_mnist", "test", cache_dir=cache_dir)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.features["label"].names[:2] == ["T-shirt/top", "Trouser"]
    assert train.features["label"].names[-1] == "Ankle boot"
    # Independent read of the raw files at the idx format's fixed offsets (headers: 16 bytes, labels 8)
    with gzip.open(builtin.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        last_image = np.frombuffer(f.read(), np.uint8, offset=16)[-784:].reshape(28, 28)
    with gzip.open(builtin.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(np.asarray(test[-1]["image"]), last_image)
    np.testing.assert_array_equal(np.asarray(test["label"]), labels)


def test_digits_from_scikit_learn(cache_dir):
    from sklearn.datasets import load_digits

    full = load_dataset("digits", "all", cache_dir=cache_dir)
    train = load_dataset("digits", "train", cache_dir=cache_dir)
    test = load_dataset("digits", "test", cache_dir=cache_dir)
    assert (len(full), len(train), len(test)) == (1797, 1437, 360)
    reference = load_digits()
    np.testing.assert_array_equal(np.asarray(full[5]["image"]), np.round(reference.images[5] * 255 / 16))
    assert np.bincount(test["label"]).min() >= 35  # stratified: 36 ± 1 of each digit


def test_fashion_mnist_without_debian_files_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(builtin, "FASHION_MNIST_DIR", tmp_path / "absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        DatasetUnavailableError, match=r"apt-get install dataset-fashion-mnist.*HF_HUB_OFFLINE"
    ):
        load_dataset("fashion_mnist", "train", cache_dir=str(tmp_path))


def test_offline_uncached_hub_id_fails_fast_and_clearly(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
    }
    script = "from vitkd.data import load_dataset; load_dataset('vitkd-tests/never-cached', 'train')"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert "DatasetUnavailableError" in last_line and "'vitkd-tests/never-cached'" in last_line
    assert "HF_HUB_OFFLINE" in last_line and "local folder" in last_line


def test_offline_setting_is_read_at_call_time(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="offline mode is on"):
        load_dataset("vitkd-tests/never-cached", "train")


def test_unreachable_hub_is_detected_and_reported(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused
    assert not hub_datasets.hub_reachable(timeout_s=2.0)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_datasets, "hub_reachable", lambda: False)
    with pytest.raises(DatasetUnavailableError, match=r"'vitkd-tests/never-cached'.*unreachable"):
        load_dataset("vitkd-tests/never-cached", "train")


def test_offline_flags_are_restored_after_a_load(monkeypatch):
    before = (datasets.config.HF_HUB_OFFLINE, hub_datasets.huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError):
        load_dataset("vitkd-tests/never-cached", "train")
    assert (datasets.config.HF_HUB_OFFLINE, hub_datasets.huggingface_hub.constants.HF_HUB_OFFLINE) == before
