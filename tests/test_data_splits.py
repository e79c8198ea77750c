"""Split selection, slicing, dataset configurations/revisions, streaming and data errors (vitkd.data)."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from huggingface_hub import constants

from vitkd import offline
from vitkd.data import (
    DataConfig,
    DatasetUnavailableError,
    ImageReadError,
    build_loaders,
    hub_datasets,
    load_dataset,
    sources,
)
from vitkd.data.loaders import IndexedStream, build_streaming_train_loader
from vitkd.data.splits import parse_split, stream_rows
from vitkd.data.synthetic import random_image_dataset, write_image_folder
from vitkd.data.transforms import build_transforms

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
- config_name: small
  data_files:
  - split: train
    path: data/validation-*
---
"""


def write_parquet_repo(root, *, seed: int = 0, card: bool = True, corrupt_test: bool = False):
    """A Hub-style dataset folder: data/<split>-00000-of-00001.parquet (3 classes) and a README card.

    Sizes: train 12 rows, validation 6, test 3 (``corrupt_test``: not parquet at all).
    """
    (root / "data").mkdir(parents=True)
    for offset, (split, per_class) in enumerate((("train", 4), ("validation", 2), ("test", 1))):
        target = root / "data" / f"{split}-00000-of-00001.parquet"
        if split == "test" and corrupt_test:
            target.write_bytes(b"not a parquet file")
        else:
            random_image_dataset(3, per_class, 8, seed=seed + offset).to_parquet(target)
    if card:
        (root / "README.md").write_text(CARD)
    return root


def no_hub(monkeypatch):
    """Fail the test if anything tries the Hub."""

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(hub_datasets, "why_offline", refuse)


# --- only the splits in use are read ---------------------------------------------------------------


def test_corrupt_unused_split_is_never_read(tmp_path, monkeypatch):
    no_hub(monkeypatch)
    root = write_parquet_repo(tmp_path / "repo", corrupt_test=True)
    cfg = DataConfig(str(root), num_workers=0, cache_dir=str(tmp_path / "cache"))  # eval: validation (auto)
    train, evaluation, info = build_loaders(cfg, batch_size=4)
    assert (len(train.dataset), len(evaluation.dataset), info.num_classes) == (12, 6, 3)
    with pytest.raises(ValueError, match=r"Cannot read split 'test' of '.*repo'"):  # when asked for
        load_dataset(str(root), "test", cache_dir=str(tmp_path / "cache"))


def test_absent_split_folder_of_save_to_disk_is_not_needed(tmp_path):
    splits = {"train": random_image_dataset(2, 3, 8), "test": random_image_dataset(2, 1, 8, seed=1)}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "saved")
    for f in (tmp_path / "saved" / "test").iterdir():
        f.write_bytes(b"damaged")
    assert len(load_dataset(str(tmp_path / "saved"), "train")) == 6


# --- slicing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "rows"),
    [
        ("train[:10%]", range(0, 144)),
        ("train[:50]", range(0, 50)),
        ("train[100:110]", range(100, 110)),
        ("train[-5:]", range(1432, 1437)),
    ],
)
def test_split_slices_follow_datasets_syntax(spec, rows):
    full = load_dataset("digits", "train")
    sliced = load_dataset("digits", spec)
    assert len(sliced) == len(rows)
    assert sliced["label"] == full.select(rows)["label"]
    np.testing.assert_array_equal(np.asarray(sliced[0]["image"]), np.asarray(full[rows[0]]["image"]))


def test_sliced_training_split_reaches_the_loader():
    train, _, _ = build_loaders(DataConfig("digits", train_split="train[:40]", num_workers=0), batch_size=8)
    assert len(train.dataset) == 40 and len(train) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_split": "train[:10%"}, r"data.train_split.*not a split name"),
        ({"eval_split": "test[a:b]"}, r"data.eval_split.*test\[a:b\]"),
        ({"streaming": True, "train_split": "train[:10%]"}, r"streamed split has no known length"),
        ({"streaming": True, "train_fraction": 0.5}, r"train_fraction does not apply to a streamed"),
        ({"name": ""}, r"data.name must be a non-empty string"),
        ({"revision": 3}, r"data.revision must be a non-empty string"),
    ],
)
def test_bad_split_and_hub_keys_fail_at_config_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig("digits", **kwargs)


# --- data.name / data.revision ----------------------------------------------------------------------


def test_name_selects_a_configuration_of_the_dataset_card(tmp_path, monkeypatch):
    no_hub(monkeypatch)
    root = write_parquet_repo(tmp_path / "repo")
    default = load_dataset(str(root), "train", cache_dir=str(tmp_path / "c"))
    small = load_dataset(str(root), "train", name="small", cache_dir=str(tmp_path / "c"))
    validation = load_dataset(str(root), "validation", cache_dir=str(tmp_path / "c"))
    assert (len(default), len(small)) == (12, 6)
    assert small["label"] == validation["label"]
    with pytest.raises(ValueError, match=r"data.name 'large'.*\['default', 'small'\]"):
        load_dataset(str(root), "train", name="large")


@pytest.mark.parametrize(("source", "kwargs"), [("digits", {"name": "x"}), ("digits", {"revision": "v1"})])
def test_name_and_revision_are_refused_where_they_mean_nothing(source, kwargs):
    with pytest.raises(ValueError, match=r"data\.(name|revision)"):
        load_dataset(source, "train", **kwargs)


def fake_hub_cache(cache, repo_id: str, revisions: dict[str, int]):
    """The Hub cache layout huggingface_hub writes: refs/<revision> → commit, snapshots/<commit>/…"""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    for revision, seed in revisions.items():
        commit = f"{seed:040x}"
        (repo / "refs" / revision).write_text(commit)
        write_parquet_repo(repo / "snapshots" / commit, seed=10 * seed)


def test_offline_hub_dataset_loads_its_cached_revision_and_configuration(tmp_path, monkeypatch):
    """The cluster workflow: snapshots cached by an online run load offline, per revision and name."""
    fake_hub_cache(tmp_path / "hub", "org/ds", {"main": 1, "v2": 2})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "arrow")
    main = load_dataset("org/ds", "train", cache_dir=cache)
    v2 = load_dataset("org/ds", "train", revision="v2", cache_dir=cache)
    small_v2 = load_dataset("org/ds", "train", name="small", revision="v2", cache_dir=cache)
    assert main["label"] == v2["label"]  # same layout, different images
    assert np.asarray(main[0]["image"]).tolist() != np.asarray(v2[0]["image"]).tolist()
    assert len(small_v2) == 6
    with pytest.raises(DatasetUnavailableError, match=r"'org/ds' at revision 'v3'.*HF_HUB_OFFLINE=1"):
        load_dataset("org/ds", "train", revision="v3", cache_dir=cache)
    with pytest.raises(DatasetUnavailableError, match=r"data.streaming reads 'org/ds' from the Hub"):
        build_loaders(DataConfig("org/ds", streaming=True, num_workers=0, cache_dir=cache), batch_size=2)


def test_online_hub_dataset_downloads_only_the_split_in_use(tmp_path, monkeypatch):
    """The online calls, checked: name and revision reach datasets, only train's files are downloaded."""
    monkeypatch.setattr(hub_datasets, "why_offline", lambda: None)
    template = write_parquet_repo(tmp_path / "template")
    commit = "c" * 40
    calls = {}

    class Builder:
        class config:  # noqa: N801  (the attribute datasets' builder has)
            data_files = {
                split: [f"hf://datasets/org/ds@{commit}/data/{split}-00000-of-00001.parquet"]
                for split in ("train", "validation", "test")
            }

    def load_dataset_builder(path, name=None, revision=None):
        calls["builder"] = (path, name, revision)
        return Builder

    def snapshot_download(repo_id, repo_type, revision, allow_patterns):
        calls["download"] = (repo_id, repo_type, revision, sorted(allow_patterns))
        return str(template)

    monkeypatch.setattr(hub_datasets.datasets, "load_dataset_builder", load_dataset_builder)
    monkeypatch.setattr(hub_datasets.huggingface_hub, "snapshot_download", snapshot_download)
    ds = load_dataset("org/ds", "train[:5]", name="default", revision="v2", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 5
    assert calls["builder"] == ("org/ds", "default", "v2")
    assert calls["download"] == (
        "org/ds",
        "dataset",
        commit,
        ["README.md", "data/train-00000-of-00001.parquet"],
    )


# --- offline detection: one function ---------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_every_offline_variable_the_libraries_honour_is_seen(monkeypatch, variable):
    for name in offline.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert offline.offline_reason() is None
    monkeypatch.setenv(variable, "yes")
    assert offline.offline_reason() == f"{variable}=yes"


# --- source names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "meant"), [("digit", "digits"), ("fashion-mnist", "fashion_mnist")])
def test_near_miss_of_a_builtin_is_refused_before_any_hub_lookup(monkeypatch, typo, meant):
    no_hub(monkeypatch)
    with pytest.raises(ValueError, match=rf"did you mean '{meant}'"):
        load_dataset(typo, "train")


@pytest.mark.parametrize("source", ["", "  "])
def test_empty_source_does_not_load_the_current_folder(monkeypatch, tmp_path, source):
    write_image_folder(tmp_path, num_classes=2, per_class=2, size=8)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="must name a dataset"):
        load_dataset(source, "train")


# --- data errors -----------------------------------------------------------------------------------


def test_truncated_jpeg_names_file_row_and_split(tmp_path):
    root = write_image_folder(
        tmp_path / "imgs", splits=("train", "test"), num_classes=2, per_class=4, size=16, suffix=".jpg"
    )
    damaged = root / "train" / "class_1" / "5.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])
    cfg = DataConfig(str(root), transform="none", num_workers=0, cache_dir=str(tmp_path / "c"))
    train, _, _ = build_loaders(cfg, batch_size=8)
    with pytest.raises(ImageReadError, match=r"row \d+ of split 'train' of .*5\.jpg.*(?i:truncated)"):
        next(iter(train))


def test_empty_split_and_empty_slice_are_named(tmp_path):
    empty = random_image_dataset(2, 3, 8).select([])
    datasets.DatasetDict({"train": random_image_dataset(2, 3, 8), "test": empty}).save_to_disk(tmp_path / "d")
    with pytest.raises(ValueError, match=r"Split 'test' of .* has no samples"):
        build_loaders(DataConfig(str(tmp_path / "d"), num_workers=0), batch_size=2)
    with pytest.raises(ValueError, match=r"Split 'train\[:0\]' of .* has no samples"):
        load_dataset(str(tmp_path / "d"), "train[:0]")


@pytest.mark.parametrize("bad", [5, -3])
def test_label_out_of_range_is_caught_before_training(tmp_path, bad):
    images = random_image_dataset(3, 1, 8)
    table = pa.table({"img": images.with_format("arrow")["image"], "cls": [0, bad, 2]})
    features = datasets.Features({"img": datasets.Image(), "cls": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset(table, info=datasets.DatasetInfo(features=features)).save_to_disk(tmp_path / "d")
    with pytest.raises(
        ValueError,
        match=rf"Column 'cls' of split 'train' .* from {min(0, bad)} to {max(2, bad)}, "
        r"outside the 3 classes 0..2",
    ):
        load_dataset(str(tmp_path / "d"), "train")


# --- streaming -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_stream_shutdown_pause(monkeypatch):
    """datasets pauses 5 s whenever a multi-source stream ends (for remote readers' threads to stop);
    local test streams end every epoch, so skip the pause."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def streaming_config(root, tmp_path, **kwargs) -> DataConfig:
    return DataConfig(
        str(root), streaming=True, transform="none", cache_dir=str(tmp_path / "c"), **{"num_workers": 0, **kwargs}
    )


def test_streaming_loader_yields_indexed_batches_of_every_sample(tmp_path):
    root = write_parquet_repo(tmp_path / "repo", card=False)
    train, evaluation, info = build_loaders(streaming_config(root, tmp_path), batch_size=4, seed=3)
    batches = list(train)
    assert len(batches) == 3 and info.num_classes == 3
    images, labels, indices = (torch.cat(parts) for parts in zip(*batches, strict=True))
    assert images.shape == (12, 3, 32, 32)
    assert sorted(indices.tolist()) == list(range(12))
    assert sorted(labels.tolist()) == sorted(load_dataset(str(root), "train")["label"])
    assert len(evaluation.dataset) == 6

    def epoch_images():
        return torch.cat([images for images, _, _ in train])

    first = epoch_images()
    assert torch.equal(epoch_images(), first)  # seeded: the same order again
    train.dataset.set_epoch(1)
    assert not torch.equal(epoch_images(), first)  # a new order for a new epoch


def test_streaming_shards_across_processes_and_slices(tmp_path):
    root = write_parquet_repo(tmp_path / "repo", card=False)
    cfg = streaming_config(root, tmp_path, train_split="train[:10]")
    classes = load_dataset(str(root), "validation").features["label"]
    streams = [sources.stream_train_split(cfg, classes, rank=r, world_size=2, seed=0) for r in range(2)]
    assert [rows for _, rows in streams] == [10, 10]  # the whole slice: the epoch length is shared
    shares = [[row["label"] for row in stream] for stream, _ in streams]
    assert [len(s) for s in shares] == [5, 5]
    assert sorted(shares[0] + shares[1]) == sorted(load_dataset(str(root), "train[:10]")["label"])


def test_streamed_damaged_image_is_named(tmp_path):
    root = write_image_folder(
        tmp_path / "imgs", splits=("train", "test"), num_classes=2, per_class=2, size=16, suffix=".jpg"
    )
    damaged = root / "train" / "class_0" / "1.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"stream of split 'train'.*1\.jpg"):
        list(build_loaders(streaming_config(root, tmp_path), batch_size=2)[0])


def test_streamed_label_out_of_range_is_named(tmp_path):
    (tmp_path / "p").mkdir()
    integers = random_image_dataset(2, 2, 8).cast_column("label", datasets.Value("int64"))
    integers.to_parquet(tmp_path / "p" / "train.parquet")
    classes = datasets.ClassLabel(names=["0"])  # as if evaluation saw one class: label 1 is out of range
    loader = build_streaming_train_loader(
        streaming_config(tmp_path / "p", tmp_path), classes, batch_size=2, seed=0
    )
    with pytest.raises(ValueError, match=r"has label 1, outside the 1 classes 0..0"):
        list(loader)


def write_sharded_parquet(root, sizes=(3, 3, 3, 3)):
    """A parquet folder with one training file (shard) per entry of ``sizes`` (its rows; 3 classes, 8 px)."""
    (root / "data").mkdir(parents=True)
    for shard, rows in enumerate(sizes):
        random_image_dataset(3, -(-rows // 3), 8, seed=shard).select(range(rows)).to_parquet(
            root / "data" / f"train-{shard:05d}-of-{len(sizes):05d}.parquet")
    random_image_dataset(3, 2, 8, seed=9).to_parquet(root / "data" / "validation-00000-of-00001.parquet")
    return root


def test_resumed_streamed_epoch_continues_with_the_same_batches_for_any_worker_count(tmp_path):
    root = write_sharded_parquet(tmp_path / "repo")
    for workers in (0, 2):
        train = build_loaders(streaming_config(root, tmp_path, num_workers=workers), batch_size=2, seed=1)[0]
        assert len(train) == 6  # 12 rows, batch 2
        whole = list(train)
        assert len(whole) == 6 and len({i for _, _, indices in whole for i in indices.tolist()}) == 12
        for skip in (1, 3):
            rest = list(train.skip_first_batches(skip))
            assert len(rest) == 6 - skip
            for got, expected in zip(rest, whole[skip:], strict=True):
                assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_skipped_streamed_batches_are_neither_decoded_nor_augmented(tmp_path, monkeypatch):
    train = build_loaders(streaming_config(write_sharded_parquet(tmp_path / "repo"), tmp_path), batch_size=2)[0]
    augmented = []
    augment = train.dataset.transform

    class Counting(type(augment)):  # counts the samples it augments
        def __call__(self, image, key):
            augmented.append(key)
            return super().__call__(image, key)

    monkeypatch.setattr(augment, "__class__", Counting)
    assert len(list(train.skip_first_batches(4))) == 2
    assert len(augmented) == 4  # the 2 batches of 2 trained on, not the 4 skipped


def test_a_worker_whose_shards_run_out_starts_over_to_fill_the_epoch(tmp_path):
    root = write_sharded_parquet(tmp_path / "repo", sizes=(8, 4))
    # 2 workers: shard 0 (8 rows) to worker 0, shard 1 (4 rows) to worker 1; each makes 3 of the 6 batches
    # of 2, so worker 0 leaves 2 rows out and worker 1 reads its 4 rows, then 2 of them again
    train = build_loaders(streaming_config(root, tmp_path, num_workers=2), batch_size=2, seed=0)[0]
    batches = list(train)
    assert len(batches) == 6
    indices = [i for _, _, batch in batches for i in batch.tolist()]
    assert len(set(indices)) == 12  # running positions: the repeated rows are new samples


def test_a_process_with_a_small_share_warns_how_many_rows_repeat(tmp_path):
    cfg = streaming_config(write_sharded_parquet(tmp_path / "repo", sizes=(8, 4)), tmp_path)
    classes = load_dataset(str(tmp_path / "repo"), "validation").features["label"]
    stream, rows = sources.stream_train_split(cfg, classes, rank=1, world_size=2, seed=0)  # shard 1: 4 rows
    share = IndexedStream(stream, build_transforms(cfg)[0], 3, where="the test split", rank=1, world_size=2,
                          batch_size=2, batches=rows // (2 * 2))
    with pytest.warns(UserWarning, match=r"rank 1 of 2, DataLoader worker 0 of 1, holds 4 rows but trains on 6 "
                                         r"per epoch, so 2 of them repeat"):
        samples = list(share)
    assert len(samples) == 6
    assert [s["label"] for s in samples[4:]] == [s["label"] for s in samples[:2]]  # the same order again


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # more workers than cores: never iterated
def test_streamed_loader_uses_a_worker_count_that_divides_the_shards(tmp_path):
    root = write_sharded_parquet(tmp_path / "repo", sizes=(4, 4, 4))
    for asked, used in ((2, 1), (3, 3), (8, 3), (0, 0)):
        train = build_loaders(streaming_config(root, tmp_path, num_workers=asked), batch_size=2)[0]
        assert train.loader.num_workers == used


def test_streamed_epoch_length_is_the_declared_size_cut_by_the_slice(tmp_path):
    def rows(stream, split):
        return sources._streamed_rows(stream, "train", *stream_rows("train", parse_split(split)[1]),
                                      DataConfig("src", train_split=split))

    undeclared = datasets.IterableDataset.from_generator(lambda: iter([{"label": 0}] * 30))
    with pytest.raises(ValueError, match=r"does not declare its size.*data.train_split: 'train\[:1281167\]'"):
        rows(undeclared, "train")
    assert rows(undeclared, "train[5:25]") == 20
    declared = sources._declare_rows(undeclared, "train", 30)
    assert (rows(declared, "train"), rows(declared, "train[10:]"), rows(declared, "train[:100]")) == (30, 20, 30)
    with pytest.raises(ValueError, match="selects no rows of the 30"):
        rows(declared, "train[40:]")
