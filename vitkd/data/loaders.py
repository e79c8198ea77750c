"""Training and evaluation DataLoaders for a :class:`~vitkd.data.config.DataConfig`.

Reproducibility: each loader owns a ``torch.Generator`` seeded from ``seed``. It fixes the shuffling
order, and DataLoader draws each epoch's worker base seed from it, then seeds ``torch``, ``random`` and
``numpy`` in worker *i* with base + *i* — so with ``num_workers > 0`` the augmentations repeat too and no
``worker_init_fn`` is needed. With ``num_workers=0`` augmentations draw from the main process's global
torch RNG, which the caller seeds (e.g. ``accelerate.utils.set_seed``).

The loaders are not prepared: the training engine hands them to ``accelerator.prepare``, which shards
them per process.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader, default_collate

from vitkd.data.config import DataConfig, DataInfo
from vitkd.data.sources import NamedRows, decode_streamed, select_splits, stream_train_split
from vitkd.data.transforms import build_transforms, eval_crop

# Seed of the evaluation subset (max_eval_samples): fixed, so runs with different seeds see the same images.
EVAL_SUBSET_SEED = 0

Images = torch.Tensor | tuple[torch.Tensor, ...]


def collate(samples: list[dict]) -> tuple[Images, torch.Tensor]:
    """Rows ``{"image": tensor or tuple of view tensors, "label": int}`` → (images, labels int64 [B]).

    Images are float32 [B, C, H, W], or a tuple (weak, strong) of those in two-view mode.
    """
    batch = default_collate(samples)
    images = batch["image"]
    return (tuple(images) if isinstance(images, list) else images), batch["label"]


def stratified_fraction(ds: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """Seeded subset of ``fraction`` of ``ds``, class proportions (nearly) kept, in dataset order.

    The stratified draw (datasets' ``train_test_split``) runs on an in-memory table of row numbers and
    labels: on the dataset itself it would write index files next to the data, even with
    ``keep_in_memory`` (which it then rejects), and the data folder may be read-only.
    """
    rows = datasets.Dataset.from_dict(
        {"row": np.arange(len(ds)), "label": ds.with_format("arrow")["label"].to_numpy()},
        features=datasets.Features({"row": datasets.Value("int64"), "label": ds.features["label"]}),
    )
    try:
        kept = rows.train_test_split(train_size=fraction, stratify_by_column="label", seed=seed)["train"]
    except ValueError as exc:
        raise ValueError(
            f"data.train_fraction={fraction} cannot split {len(ds)} samples by class: {exc}"
        ) from exc
    return ds.select(np.sort(kept.with_format("numpy")["row"]), keep_in_memory=True)


def fixed_subset(ds: datasets.Dataset, size: int) -> datasets.Dataset:
    """``size`` samples drawn with seed :data:`EVAL_SUBSET_SEED`, kept in dataset order."""
    keep = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).permutation(len(ds))[:size])
    return ds.select(keep, keep_in_memory=True)


def _check_eval_batch_size(eval_batch_size: int) -> None:
    if eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")


def _loader(
    ds: datasets.Dataset,
    transform: Callable,
    cfg: DataConfig,
    *,
    split: str,
    train: bool,
    batch_size: int,
    seed: int,
) -> DataLoader:
    """DataLoader over split ``split`` ``ds`` with ``transform``; training shuffles and drops the last
    incomplete batch. A damaged image stops it with an error naming the split, row and file.

    Each loader gets its own generator seeded with ``seed``: it orders the training samples and seeds
    the workers, and it keeps iterating an eval loader from consuming the global RNG.
    """
    return DataLoader(
        NamedRows(ds.with_transform(transform), split, cfg.source),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        pin_memory=cfg.pin_memory,
        collate_fn=collate,
    )


def _data_info(cfg: DataConfig, class_names: list[str]) -> DataInfo:
    crop_pct, crop_mode, interpolation = eval_crop(cfg)
    return DataInfo(
        num_classes=len(class_names),
        class_names=list(class_names),
        image_size=cfg.effective_image_size,
        in_chans=cfg.in_chans,
        mean=cfg.effective_mean,
        std=cfg.effective_std,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
        interpolation=interpolation,
    )


def _capped(cfg: DataConfig, evaluation: datasets.Dataset) -> datasets.Dataset:
    if cfg.max_eval_samples is not None and cfg.max_eval_samples < len(evaluation):
        return fixed_subset(evaluation, cfg.max_eval_samples)
    return evaluation


def build_eval_loader(cfg: DataConfig, *, batch_size: int, seed: int = 0) -> tuple[DataLoader, DataInfo]:
    """The evaluation half of :func:`build_loaders` alone (same split, subset, transform and batches)."""
    _check_eval_batch_size(batch_size)
    ((eval_name, evaluation),) = select_splits(cfg, train=False)
    evaluation = _capped(cfg, evaluation)
    loader = _loader(
        evaluation,
        build_transforms(cfg)[1],
        cfg,
        split=eval_name,
        train=False,
        batch_size=batch_size,
        seed=seed,
    )
    return loader, _data_info(cfg, evaluation.features["label"].names)


def build_loaders(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    seed: int = 0,
) -> tuple[DataLoader, DataLoader, DataInfo]:
    """(train loader, eval loader, DataInfo) for ``cfg``.

    Train: shuffled by a generator seeded with ``seed``, ``drop_last=True``, batches
    ``(images float32 [B, C, H, W], labels int64 [B])`` or ``((weak, strong), labels)`` with
    ``cfg.two_view``. Eval: ``cfg.eval_split`` or the first labelled one of validation/valid/val/…/test,
    at most ``cfg.max_eval_samples`` of it, in dataset order, ``drop_last=False``, batch size
    ``eval_batch_size`` (default ``batch_size``). Raises ValueError when the training split holds less
    than one batch.
    """
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be >= 2, got {batch_size}: training drops the last incomplete batch and the "
            "distillation losses use per-class statistics over the batch"
        )
    _check_eval_batch_size(eval_batch_size)
    if cfg.streaming:
        return _streaming_loaders(cfg, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
    (train_name, train), (eval_name, evaluation) = select_splits(cfg)
    evaluation = _capped(cfg, evaluation)
    class_names = train.features["label"].names
    if evaluation.features["label"].names != class_names:
        raise ValueError(
            f"Splits {train_name!r} and {eval_name!r} of {cfg.source!r} have different classes: "
            f"{class_names} vs {evaluation.features['label'].names}"
        )
    if cfg.train_fraction < 1.0:
        train = stratified_fraction(train, cfg.train_fraction, seed)
    if len(train) < batch_size:
        raise ValueError(
            f"The training split {train_name!r} has {len(train)} samples "
            f"(train_fraction={cfg.train_fraction}), fewer than one batch of batch_size={batch_size}; "
            "lower the batch size or use more data"
        )
    train_transform, eval_transform = build_transforms(cfg)
    train_loader = _loader(
        train, train_transform, cfg, split=train_name, train=True, batch_size=batch_size, seed=seed
    )
    eval_loader = _loader(
        evaluation, eval_transform, cfg, split=eval_name, train=False, batch_size=eval_batch_size, seed=seed
    )
    return train_loader, eval_loader, _data_info(cfg, class_names)


class IndexedStream(torch.utils.data.IterableDataset):
    """A streamed training split as samples ``{"image", "label", "index"}`` for a DataLoader.

    ``index`` is the sample's running position in this process's stream, interleaved over processes
    and DataLoader workers (position · lanes + lane, lane = rank · workers + worker) so that no two
    samples of one epoch share it; it depends on the process and worker counts. The stream is not
    rewindable: a resumed run restarts the epoch's stream from its beginning (no exact mid-epoch resume).
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        transform: Callable,
        num_classes: int,
        *,
        where: str,
        rank: int,
        world_size: int,
    ) -> None:
        super().__init__()
        self.stream, self.transform, self.num_classes = stream, transform, num_classes
        self.where, self.rank, self.world_size = where, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (the shuffle seed becomes seed + epoch, datasets' rule)."""
        self.stream.set_epoch(epoch)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes, lane = self.world_size * workers, self.rank * workers + worker
        for position, row in enumerate(self.stream):  # datasets hands each worker its own shards
            image, label = decode_streamed(row, self.num_classes, position=position, where=self.where)
            sample = self.transform({"image": [image], "label": [label]})
            yield {"image": sample["image"][0], "label": label, "index": position * lanes + lane}


def collate_indexed(samples: list[dict]) -> tuple[Images, torch.Tensor, torch.Tensor]:
    """Streamed samples → (images, labels int64 [B], indices int64 [B]); images as in :func:`collate`."""
    images, labels = collate([{"image": s["image"], "label": s["label"]} for s in samples])
    return images, labels, torch.tensor([s["index"] for s in samples], dtype=torch.int64)


def build_streaming_train_loader(
    cfg: DataConfig, classes: datasets.ClassLabel, *, batch_size: int, seed: int
) -> DataLoader:
    """Training DataLoader over the streamed ``cfg.train_split``, already sharded for this process.

    Batches ``(images, labels, indices)`` (see :class:`IndexedStream`), ``drop_last=True``; no length
    (set ``train.max_steps``). The process layout comes from Accelerate's ``PartialState``; the loader
    must not be sharded again (do not pass it through ``accelerator.prepare``; move batches to the
    device directly). Call ``loader.dataset.set_epoch(epoch)`` each epoch.
    """
    state = PartialState()
    stream = stream_train_split(
        cfg, classes, rank=state.process_index, world_size=state.num_processes, seed=seed
    )
    dataset = IndexedStream(
        stream,
        build_transforms(cfg)[0],
        classes.num_classes,
        where=f"split {cfg.train_split!r} of {cfg.source!r}",
        rank=state.process_index,
        world_size=state.num_processes,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=True,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        collate_fn=collate_indexed,
    )


def _streaming_loaders(
    cfg: DataConfig, *, batch_size: int, eval_batch_size: int, seed: int
) -> tuple[DataLoader, DataLoader, DataInfo]:
    """:func:`build_loaders` with ``cfg.streaming``: the evaluation split loaded, the training split streamed."""
    ((eval_name, evaluation),) = select_splits(cfg, train=False)
    evaluation = _capped(cfg, evaluation)
    classes = evaluation.features["label"]
    train_loader = build_streaming_train_loader(cfg, classes, batch_size=batch_size, seed=seed)
    eval_loader = _loader(
        evaluation,
        build_transforms(cfg)[1],
        cfg,
        split=eval_name,
        train=False,
        batch_size=eval_batch_size,
        seed=seed,
    )
    return train_loader, eval_loader, _data_info(cfg, classes.names)
