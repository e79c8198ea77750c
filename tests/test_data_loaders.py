"""vitkd.data.build_loaders: batch format, reproducibility, subsets, split choice, errors."""

from __future__ import annotations

import collections

import datasets
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from vitkd.data import DataConfig, build_eval_loader, build_loaders
from vitkd.data.loaders import RepeatedAugSampler, TrainBatchSampler
from vitkd.data.synthetic import random_image_dataset, write_image_folder
from vitkd.data.transforms import SampleKey


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
    images, labels, indices = next(iter(train))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == indices.shape == (16,) and labels.dtype == indices.dtype == torch.int64
    assert info.num_classes == 4 and info.image_size == 32 and info.in_chans == 3
    assert [len(y) for _, y, _ in train] == [16, 16, 8]  # the last, partial batch is kept
    assert sum(len(y) for _, y in evaluation) == 12  # every evaluation sample, in order, last batch kept


def test_two_view_batches(sources):
    train, _, _ = build_loaders(config(sources["dict"], two_view=True, transform="cifar"), batch_size=8)
    (weak, strong), labels, _ = next(iter(train))
    assert weak.shape == strong.shape == (8, 3, 32, 32) and labels.shape == (8,)
    assert not torch.equal(weak, strong)


def first_batch(source: str, seed: int, **overrides):
    train, _, _ = build_loaders(config(source, **overrides), batch_size=8, seed=seed)
    return next(iter(train))


def test_same_seed_same_batch_including_augmentation_with_workers(sources):
    kwargs = {"num_workers": 2, "persistent_workers": False, "two_view": True}
    (weak_a, strong_a), labels_a, _ = first_batch(sources["dict"], seed=3, **kwargs)
    (weak_b, strong_b), labels_b, _ = first_batch(sources["dict"], seed=3, **kwargs)
    assert torch.equal(labels_a, labels_b)
    assert torch.equal(weak_a, weak_b) and torch.equal(strong_a, strong_b)


def test_seed_sets_the_order(sources):
    images_a, labels_a, _ = first_batch(sources["dict"], seed=0, transform="none")
    images_b, labels_b, _ = first_batch(sources["dict"], seed=0, transform="none")
    images_c, _, _ = first_batch(sources["dict"], seed=1, transform="none")
    assert torch.equal(labels_a, labels_b) and torch.equal(images_a, images_b)
    assert not torch.equal(images_a, images_c)


def test_train_fraction_is_stratified_and_seeded(sources):
    def subset(seed: int) -> datasets.Dataset:
        train, _, _ = build_loaders(config(sources["dict"], train_fraction=0.5), batch_size=4, seed=seed)
        return train.dataset.rows  # raw rows, without the augmentation

    first = subset(0)
    assert collections.Counter(first["label"]) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert first["image"] == subset(0)["image"]


@pytest.mark.parametrize("fraction, seed", [(0.3, 0), (0.5, 7), (0.13, 100)])
def test_stratified_fraction_is_datasets_train_test_split_draw(fraction, seed):
    """The fast path draws exactly the rows ``train_test_split(stratify_by_column=...)`` keeps."""
    import numpy as np

    from vitkd.data.loaders import stratified_fraction

    labels = [i % 3 if i % 7 else 3 for i in range(90)]  # unequal classes
    ds = datasets.Dataset.from_dict(
        {"row": list(range(90)), "label": labels},
        features=datasets.Features({"row": datasets.Value("int64"), "label": datasets.ClassLabel(num_classes=4)}),
    )
    expected = ds.train_test_split(train_size=fraction, stratify_by_column="label", seed=seed)["train"]["row"]
    assert stratified_fraction(ds, fraction, seed)["row"] == sorted(expected)
    assert not np.array_equal(stratified_fraction(ds, fraction, seed + 1)["row"], sorted(expected))


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
    with pytest.raises(ValueError, match="batch_size must be >= 2 .* got batch_size=1, min_batch=2"):
        build_loaders(config(sources["dict"]), batch_size=1, min_batch=2)
    with pytest.raises(
        ValueError, match=r"has 20 samples \(train_fraction=0.5\), fewer than one batch of batch_size=32"
    ):
        build_loaders(config(sources["dict"], train_fraction=0.5), batch_size=32)


def test_fashion_mnist_loaders(cache_dir):
    train, evaluation, info = build_loaders(
        config("fashion_mnist", cache_dir=cache_dir, in_chans=1), batch_size=64
    )
    images, labels, _ = next(iter(train))
    assert images.shape == (64, 1, 32, 32)
    assert (len(train), len(evaluation.dataset)) == (-(-60_000 // 64), 10_000)
    assert info.class_names[0] == "T-shirt/top" and info.num_classes == 10


# ----------------------------------------------------------------------------- deterministic augmentation


def epoch_samples(loader, epoch: int) -> dict[int, tuple[torch.Tensor, ...]]:
    """{row index: (view tensors)} of one epoch of a training loader."""
    loader.batch_sampler.sampler.set_epoch(epoch)
    return samples_of(loader)


def samples_of(loader) -> dict[int, tuple[torch.Tensor, ...]]:
    """{row index: (view tensors)} of one pass over a loader of training batches."""
    out = {}
    for images, _, indices in loader:
        views = images if isinstance(images, tuple) else (images,)
        for row, index in enumerate(indices.tolist()):
            assert index not in out
            out[index] = tuple(v[row] for v in views)
    return out


def assert_same_samples(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for index in a:
        assert all(torch.equal(x, y) for x, y in zip(a[index], b[index], strict=True)), index


def two_view_loader(source: str, *, batch_size: int, workers: int, seed: int = 5):
    cfg = config(source, two_view=True, num_workers=workers, persistent_workers=workers > 0)
    return build_loaders(cfg, batch_size=batch_size, seed=seed)[0]


def test_augmentation_is_a_function_of_seed_epoch_and_sample(sources):
    """Bit-identical per sample for 0 vs 2 persistent workers, batch 8 vs 16, shuffled vs in order; the
    epoch reaches persistent workers (epoch 1 differs from 0 and matches the worker-free loader)."""
    reference = two_view_loader(sources["dict"], batch_size=8, workers=0)
    epoch0, epoch1 = epoch_samples(reference, 0), epoch_samples(reference, 1)
    workers = two_view_loader(sources["dict"], batch_size=16, workers=2)
    assert_same_samples(epoch_samples(workers, 0), epoch0)
    assert_same_samples(epoch_samples(workers, 1), epoch1)
    in_order = DataLoader(reference.dataset, collate_fn=reference.collate_fn,
                          batch_sampler=BatchSampler([SampleKey(0, i) for i in range(40)], 6, drop_last=False))
    assert_same_samples(samples_of(in_order), epoch0)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])
    assert not torch.equal(epoch0[0][0], epoch0[0][1])  # weak and strong views are drawn apart


def test_order_is_seeded_per_epoch_and_does_not_touch_the_global_rng(sources):
    loader = two_view_loader(sources["dict"], batch_size=8, workers=0)
    state = torch.get_rng_state()
    orders = [[i for _, _, idx in loader for i in idx.tolist()] for _ in range(2)]  # epochs 0 and 1
    assert torch.equal(state, torch.get_rng_state())
    again = two_view_loader(sources["dict"], batch_size=8, workers=0)
    again.batch_sampler.sampler.set_epoch(1)
    assert orders[0] != orders[1] and [i for _, _, idx in again for i in idx.tolist()] == orders[1]
    assert sorted(orders[0]) == list(range(40))


def test_accelerate_keeps_the_sampler_and_resumes_mid_epoch(sources):
    """prepare() leaves EpochSampler in place (set_epoch reaches it); skip_first_batches continues the
    same epoch with the same augmented tensors."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(two_view_loader(sources["dict"], batch_size=8, workers=0))
    full = list(epoch_batches(prepared, 2))
    prepared.set_epoch(2)
    resumed = list(accelerator.skip_first_batches(prepared, 3))
    assert len(full) == 5 and len(resumed) == 2
    for (views_a, labels_a, idx_a), (views_b, labels_b, idx_b) in zip(full[3:], resumed, strict=True):
        assert torch.equal(idx_a, idx_b) and torch.equal(labels_a, labels_b)
        assert all(torch.equal(a, b) for a, b in zip(views_a, views_b, strict=True))
    reference = two_view_loader(sources["dict"], batch_size=8, workers=0)
    reference.batch_sampler.sampler.set_epoch(2)
    assert [b[2].tolist() for b in reference] == [b[2].tolist() for b in full]


def epoch_batches(loader, epoch: int):
    loader.set_epoch(epoch)
    yield from loader


@pytest.mark.parametrize(("batch_size", "min_batch", "sizes"), [(16, 1, [16, 16, 8]), (13, 2, [13, 13, 13])])
def test_last_partial_batch_kept_unless_below_min_batch(sources, batch_size, min_batch, sizes):
    train, _, _ = build_loaders(config(sources["dict"]), batch_size=batch_size, min_batch=min_batch)
    assert [len(y) for _, y, _ in train] == sizes and len(train) == len(sizes)  # 40 = 3·13 + 1


@pytest.mark.parametrize(("rows", "processes", "batch_size"), [(40, 1, 8), (300, 2, 16), (40, 3, 4)])
def test_repeated_augmentation_gives_each_process_timms_list(monkeypatch, rows, processes, batch_size):
    """With timm's permutation, each process's batches under Accelerate's sharding hold exactly the rows
    of timm's RepeatAugSampler for that rank (cut to whole batches with several processes), and the
    copies of a row carry distinct repeat numbers."""
    from accelerate.data_loader import BatchSamplerShard
    from timm.data.distributed_sampler import RepeatAugSampler

    epoch = 4
    monkeypatch.setattr(RepeatedAugSampler, "_order",
                        lambda self, e: torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(e)))
    sampler = RepeatedAugSampler(rows, 0, repeats=3, batch_size=batch_size, num_processes=processes)
    sampler.set_epoch(epoch)
    seen = collections.Counter()
    for rank in range(processes):
        shard = BatchSamplerShard(TrainBatchSampler(sampler, batch_size, 1), processes, rank)
        sampler.set_epoch(epoch)
        keys = [key for batch in shard for key in batch]
        timm_sampler = RepeatAugSampler(range(rows), num_replicas=processes, rank=rank, num_repeats=3)
        timm_sampler.set_epoch(epoch)
        expected = list(timm_sampler)
        if processes > 1:
            expected = expected[: len(expected) // batch_size * batch_size]
        assert [k.index for k in keys] == expected and {k.epoch for k in keys} == {epoch}
        seen.update((k.index, k.repeat) for k in keys)
    assert max(seen.values()) == 1  # no two copies share an augmentation


def test_repeated_copies_of_a_row_go_to_different_processes():
    sampler = RepeatedAugSampler(300, 7, repeats=3, batch_size=10, num_processes=3)
    from accelerate.data_loader import BatchSamplerShard

    where = collections.defaultdict(set)
    for rank in range(3):
        for batch in BatchSamplerShard(TrainBatchSampler(sampler, 10, 1), 3, rank):
            for key in batch:
                where[key.index].add(rank)
        sampler.set_epoch(0)
    assert all(len(ranks) == 3 for ranks in where.values())
