"""Training and evaluation DataLoaders for a :class:`~vitkd.data.config.DataConfig`.

Reproducibility: the training loader's sampler (:class:`EpochSampler`) yields :class:`SampleKey` items
(epoch, row, repeat), its order a seeded permutation of (seed, epoch); the dataset wrapper
(:class:`AugmentedRows`) augments each row under seeds derived from its key (see
:mod:`vitkd.data.transforms`). The sampler runs in the main process and the keys travel to the workers
with the indices, so the epoch reaches persistent workers too, and the augmented image of sample *i* in
epoch *e* depends on nothing else: not on worker count, process count, batch size, position, or a resume
(for a streamed split the index itself depends on the process and worker counts: :class:`IndexedStream`).
The global RNG is never consumed (each loader also owns a generator for DataLoader's worker seeds).

The loaders are not prepared: the training engine hands them to ``accelerator.prepare``, which shards
the batches per process (``BatchSamplerShard``). Our sampler is not a ``RandomSampler``, so Accelerate
leaves it in place, and ``DataLoaderShard.set_epoch`` reaches :meth:`EpochSampler.set_epoch`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator

import datasets
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import send_to_device
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, default_collate

from vitkd.data.config import DataConfig, DataInfo
from vitkd.data.sources import NamedRows, decode_streamed, select_splits, stream_train_split
from vitkd.data.transforms import SampleAugmenter, SampleKey, build_transforms, eval_crop

# Seed of the evaluation subset (max_eval_samples): fixed, so runs with different seeds see the same images.
EVAL_SUBSET_SEED = 0

Images = torch.Tensor | tuple[torch.Tensor, ...]


def collate(samples: list[dict]) -> tuple[Images, torch.Tensor]:
    """Evaluation rows ``{"image": tensor, "label": int}`` → (images float32 [B, C, H, W], labels int64 [B])."""
    batch = default_collate(samples)
    return batch["image"], batch["label"]


def collate_train(samples: list[dict]) -> tuple[Images, torch.Tensor, torch.Tensor]:
    """Training rows ``{"image": (view tensors), "label": int, "index": int}`` → (images, labels, indices).

    images: float32 [B, C, H, W], or a tuple (weak, strong) of those in two-view mode; labels and the
    dataset row indices: int64 [B].
    """
    batch = default_collate(samples)
    views = tuple(batch["image"])
    return (views[0] if len(views) == 1 else views), batch["label"], batch["index"]


class EpochSampler(Sampler[SampleKey]):
    """Yields one epoch's :class:`SampleKey` items in an order seeded by (seed, epoch).

    Call :meth:`set_epoch` before iterating (``DataLoaderShard`` does, with its iteration count); after a
    complete pass the epoch advances by one, as with torch's ``RandomSampler``, so an unprepared loader
    also gives a new epoch per pass.
    """

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows, self.seed = num_rows, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = self.epoch
        yield from self._keys(epoch)
        self.epoch = epoch + 1

    def _keys(self, epoch: int) -> Iterator[SampleKey]:
        return (SampleKey(epoch, int(i)) for i in self._order(epoch))

    def _order(self, epoch: int) -> torch.Tensor:
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        return torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(seed))


class RepeatedAugSampler(EpochSampler):
    """Repeated augmentation (DeiT's RASampler, timm's ``RepeatAugSampler``), arranged for Accelerate.

    Each epoch: a seeded permutation of the rows, each row repeated ``repeats`` times in a row, process
    ``p`` of ``W`` taking positions ``p, p + W, …`` (wrapping round to pad), at most timm's
    ``num_selected_samples`` of them (⌊N / 256⌋ · 256 / W, or ⌈N / W⌉ below 256 rows): the epoch is as long
    as without repetition, and a row's copies land on different processes. The copies differ in
    ``SampleKey.repeat`` (so in their augmentation; a wrapped-round copy continues the numbering).

    Accelerate shards a single stream by whole batches (batch ``b`` to process ``b mod W``), so the
    stream interleaves the processes' lists batch by batch: every process then gets exactly timm's list.
    With ``W > 1`` each list is cut to whole batches (Accelerate would refill a partial one from the
    epoch's start).
    """

    def __init__(self, num_rows: int, seed: int, *, repeats: int, batch_size: int, num_processes: int) -> None:
        super().__init__(num_rows, seed)
        self.repeats, self.batch_size, self.num_processes = repeats, batch_size, num_processes
        per_process = math.ceil(num_rows * repeats / num_processes)
        selected = (num_rows // 256 * 256 / num_processes) if num_rows >= 256 else math.ceil(num_rows / num_processes)
        self.per_process = min(int(selected), per_process)
        if num_processes > 1:
            self.per_process -= self.per_process % batch_size
        if self.per_process < 1:
            raise ValueError(f"repeated augmentation over {num_rows} rows leaves no whole batch of {batch_size} "
                             f"per process ({num_processes} processes): lower train.batch_size")
        self.total = per_process * num_processes

    def __len__(self) -> int:
        return self.per_process * self.num_processes

    def _keys(self, epoch: int) -> Iterator[SampleKey]:
        order, n, r, w = self._order(epoch).tolist(), self.num_rows * self.repeats, self.repeats, self.num_processes

        def key(position: int) -> SampleKey:
            within = position % n
            return SampleKey(epoch, order[within // r], within % r + position // n * r)

        lists = [[key(i) for i in range(p, self.total, w)[: self.per_process]] for p in range(w)]
        for start in range(0, self.per_process, self.batch_size):
            for keys in lists:
                yield from keys[start : start + self.batch_size]


class TrainBatchSampler(BatchSampler):
    """Batches of ``batch_size`` keys; the last, partial batch is kept unless smaller than ``min_batch``.

    (The CIFAR papers' loaders keep it: 782 steps per epoch of 50 000 at batch 64. Losses with batch
    statistics need at least 2 samples, and then a 1-sample tail is dropped.)
    """

    def __init__(self, sampler: Sampler, batch_size: int, min_batch: int) -> None:
        super().__init__(sampler, batch_size, drop_last=False)
        self.min_batch = min_batch

    def __iter__(self) -> Iterator[list]:
        yield from (batch for batch in super().__iter__() if len(batch) >= self.min_batch)

    def __len__(self) -> int:
        full, tail = divmod(len(self.sampler), self.batch_size)
        return full + int(0 < tail and tail >= self.min_batch)


class AugmentedRows(Dataset):
    """Training rows of a 🤗 dataset, looked up by :class:`SampleKey` and augmented for that key.

    ``__getitems__`` (which DataLoader prefers) reads a batch's rows from Arrow in one call.
    """

    def __init__(self, rows: datasets.Dataset, augment: SampleAugmenter) -> None:
        self.rows, self.augment = rows, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, keys: list[SampleKey]) -> list[dict]:
        rows = self.rows[[key.index for key in keys]]
        return [
            {"image": self.augment(image, key), "label": label, "index": key.index}
            for image, label, key in zip(rows["image"], rows["label"], keys, strict=True)
        ]

    def __getitem__(self, key: SampleKey) -> dict:
        return self.__getitems__([key])[0]


def stratified_fraction(ds: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """Seeded subset of ``fraction`` of ``ds``, class proportions (nearly) kept, in dataset order.

    The draw is the one ``Dataset.train_test_split(train_size=fraction, stratify_by_column="label",
    seed=seed)`` makes (same sizes, generator and datasets' own stratified sampler), called on the label
    array directly: ``train_test_split`` itself converts the label column row by row (about 6 s of CPU
    for 57 500 rows with datasets 5) and writes index files next to the data, which may be read-only.
    """
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    labels = ds.with_format("arrow")["label"].to_numpy()
    n_train = math.floor(fraction * len(ds))
    try:
        kept, _ = next(stratified_shuffle_split_generate_indices(
            labels, n_train, len(ds) - n_train, rng=np.random.default_rng(seed)))
    except Exception as exc:  # datasets raises a bare Exception("Minimum class count error")
        raise ValueError(f"data.train_fraction={fraction} cannot split {len(ds)} samples by class: {exc}") from exc
    return ds.select(np.sort(kept), keep_in_memory=True)


def fixed_subset(ds: datasets.Dataset, size: int) -> datasets.Dataset:
    """``size`` samples drawn with seed :data:`EVAL_SUBSET_SEED`, kept in dataset order."""
    keep = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).permutation(len(ds))[:size])
    return ds.select(keep, keep_in_memory=True)


def _check_eval_batch_size(eval_batch_size: int) -> None:
    if eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")


def _eval_loader(
    ds: datasets.Dataset, transform: Callable, cfg: DataConfig, *, split: str, batch_size: int, seed: int
) -> DataLoader:
    """DataLoader over split ``split`` ``ds`` in order, last batch kept. A damaged image stops it with an
    error naming the split, row and file. Its own generator (for the worker seeds) keeps iterating it
    from consuming the global RNG."""
    return DataLoader(
        NamedRows(ds.with_transform(transform), split, cfg.source),
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        pin_memory=cfg.pin_memory,
        collate_fn=collate,
    )


def _train_loader(
    ds: datasets.Dataset, augment: SampleAugmenter, cfg: DataConfig, *, split: str, batch_size: int, min_batch: int,
    seed: int, repeats: int, num_processes: int,
) -> DataLoader:
    """DataLoader of (images, labels, indices) with :class:`EpochSampler` order (:class:`RepeatedAugSampler`
    with ``repeats > 1``) and per-key augmentation."""
    if repeats > 1:
        sampler = RepeatedAugSampler(len(ds), seed, repeats=repeats, batch_size=batch_size,
                                     num_processes=num_processes)
    else:
        sampler = EpochSampler(len(ds), seed)
    return DataLoader(
        NamedRows(AugmentedRows(ds, augment), split, cfg.source, rows=ds),
        batch_sampler=TrainBatchSampler(sampler, batch_size, min_batch),
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        pin_memory=cfg.pin_memory,
        collate_fn=collate_train,
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
    loader = _eval_loader(evaluation, build_transforms(cfg)[1], cfg, split=eval_name, batch_size=batch_size, seed=seed)
    return loader, _data_info(cfg, evaluation.features["label"].names)


def build_loaders(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    seed: int = 0,
    min_batch: int = 1,
    data_seed: int | None = None,
    num_processes: int = 1,
    batches_multiple: int = 1,
) -> tuple[DataLoader | StreamingTrainLoader, DataLoader, DataInfo]:
    """(train loader, eval loader, DataInfo) for ``cfg``.

    Train: batches ``(images float32 [B, C, H, W], labels int64 [B], row indices int64 [B])``, images a
    tuple (weak, strong) with ``cfg.two_view``; order and augmentation seeded by ``seed`` and the epoch
    (module docstring); the last partial batch is kept unless it holds fewer than ``min_batch`` samples
    (2 for losses with batch statistics: ``DistillationLoss.uses_batch_statistics``). Eval:
    ``(images, labels)`` from ``cfg.eval_split`` or the first labelled one of validation/valid/val/…/test,
    at most ``cfg.max_eval_samples`` of it, in dataset order, every sample, batch size ``eval_batch_size``
    (default ``batch_size``). Raises ValueError when the training split holds less than one batch.

    ``seed`` orders the training samples; ``data_seed`` (default ``seed``) draws the augmentations and the
    ``train_fraction`` subset: a run from a teacher-logit cache takes the cache's, so that other seeds
    change the order (and the student's initialisation) but not the images the cached logits belong to.
    ``num_processes``: the processes Accelerate will shard the loader over (repeated augmentation
    arranges its stream for them; other samplers do not need it).

    With ``cfg.streaming`` the training loader is a :class:`StreamingTrainLoader` (not for
    ``accelerator.prepare``) of fixed-length epochs, a multiple of ``batches_multiple`` batches each.
    """
    data_seed = seed if data_seed is None else data_seed
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    if not 1 <= min_batch <= batch_size:
        raise ValueError(
            f"batch_size must be >= {max(min_batch, 1)} (the loss's smallest usable batch), got batch_size="
            f"{batch_size}, min_batch={min_batch}: raise train.batch_size"
        )
    _check_eval_batch_size(eval_batch_size)
    if cfg.streaming:
        return _streaming_loaders(cfg, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                                  batches_multiple=batches_multiple)
    (train_name, train), (eval_name, evaluation) = select_splits(cfg)
    evaluation = _capped(cfg, evaluation)
    class_names = train.features["label"].names
    if evaluation.features["label"].names != class_names:
        raise ValueError(
            f"Splits {train_name!r} and {eval_name!r} of {cfg.source!r} have different classes: "
            f"{class_names} vs {evaluation.features['label'].names}"
        )
    if cfg.train_fraction < 1.0:
        train = stratified_fraction(train, cfg.train_fraction, data_seed)
    if len(train) < batch_size:
        raise ValueError(
            f"The training split {train_name!r} has {len(train)} samples "
            f"(train_fraction={cfg.train_fraction}), fewer than one batch of batch_size={batch_size}; "
            "lower the batch size or use more data"
        )
    augment, eval_transform = build_transforms(cfg, data_seed)
    train_loader = _train_loader(train, augment, cfg, split=train_name, batch_size=batch_size, min_batch=min_batch,
                                 seed=seed, repeats=max(cfg.repeated_aug, 1), num_processes=num_processes)
    eval_loader = _eval_loader(evaluation, eval_transform, cfg, split=eval_name, batch_size=eval_batch_size,
                               seed=seed)
    return train_loader, eval_loader, _data_info(cfg, class_names)


class IndexedStream(torch.utils.data.IterableDataset):
    """One epoch of a process's share of a streamed training split: ``batches`` batches of ``batch_size``
    samples ``{"image", "label", "index"}``, whatever the share holds.

    A DataLoader with W workers takes batch ``b`` from worker ``b mod W`` (datasets gives each worker its
    own shards), so worker ``w`` yields exactly the samples of its batches. Every (process, worker) share
    gets the same quota; datasets balances shards by count, not rows, so with shards of unequal size a
    larger share is cut off and a smaller one starts over (the same order again; it warns, naming how many
    rows repeat); a share that yields no row at all is an error. ``index`` is the sample's running
    position in its worker's stream, interleaved over processes and workers (position · lanes + lane,
    lane = rank · workers + worker) so that no two samples of one epoch share it. Augmentation is seeded
    per (epoch, index) as in the map-style loader.

    ``skip``: the epoch's first ``skip`` batches are read but not decoded or augmented (placeholder
    samples, discarded by :class:`StreamingTrainLoader`), so a resumed epoch continues with exactly the
    batches of an uninterrupted one, for any worker count.
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        transform: SampleAugmenter,
        num_classes: int,
        *,
        where: str,
        rank: int,
        world_size: int,
        batch_size: int,
        batches: int,
    ) -> None:
        super().__init__()
        self.stream, self.transform, self.num_classes = stream, transform, num_classes
        self.where, self.rank, self.world_size = where, rank, world_size
        self.batch_size, self.batches = batch_size, batches
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (the shuffle seed becomes seed + epoch, datasets' rule); the epoch also
        seeds the augmentation (workers are not persistent, so each epoch's workers get it)."""
        self.stream.set_epoch(epoch)
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes, lane = self.world_size * workers, self.rank * workers + worker
        mine = range(worker, self.batches, workers)  # the batch numbers this worker makes
        skipped = len(range(worker, min(self.skip, self.batches), workers)) * self.batch_size
        quota = len(mine) * self.batch_size
        for position, row in enumerate(itertools.islice(self._rows(quota, f"worker {worker} of {workers}"), quota)):
            index = position * lanes + lane
            if position < skipped:  # a batch the resumed epoch has already trained on
                yield {"image": self._placeholder, "label": 0, "index": index}
                continue
            image, label = decode_streamed(row, self.num_classes, position=position, where=self.where)
            yield {"image": self.transform(image, SampleKey(self.epoch, index)), "label": label, "index": index}

    @property
    def _placeholder(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(()),) * len(self.transform.views)

    def _rows(self, quota: int, worker: str) -> Iterator[dict]:
        """The worker's rows, starting over when they run out before ``quota``."""
        share = 0
        for row in self.stream:
            share += 1
            yield row
        if share == 0:
            raise ValueError(
                f"The stream of {self.where} gave rank {self.rank} of {self.world_size}, DataLoader {worker}, no "
                "rows: use fewer processes or data.num_workers, or a split with more shards"
            )
        warnings.warn(
            f"The stream of {self.where}: rank {self.rank} of {self.world_size}, DataLoader {worker}, holds "
            f"{share} rows but trains on {quota} per epoch, so {quota - share} of them repeat (and a larger share "
            "elsewhere is cut off): the split's shards differ in size; use shards of equal size, or a "
            "data.num_workers / process count that divides their number", stacklevel=2,
        )
        while True:
            yield from self.stream


class StreamingTrainLoader:
    """Fixed-length epochs over a streamed training split, for the training engine.

    Iterating yields ``len(self)`` batches ``(images, labels, indices)`` of this process's share (see
    :class:`IndexedStream`), on ``device`` when set. It is not handed to ``accelerator.prepare``: the
    stream is already split between processes, and Accelerate would split it again (or dispatch it from
    process 0). Every process makes the same number of batches per epoch, so DDP stays in step.
    """

    def __init__(self, loader: DataLoader, device: torch.device | None = None) -> None:
        self.loader, self.device = loader, device

    @property
    def dataset(self) -> IndexedStream:
        return self.loader.dataset

    def __len__(self) -> int:
        return self.dataset.batches

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple]:
        return self.skip_first_batches(0)

    def skip_first_batches(self, skip: int) -> Iterator[tuple]:
        """The epoch's batches after the first ``skip`` (a resumed epoch; Accelerate's
        ``skip_first_batches`` would decode and augment the skipped ones)."""
        self.dataset.skip = skip
        try:
            for number, batch in enumerate(self.loader):
                if number >= skip:
                    yield batch if self.device is None else send_to_device(batch, self.device, non_blocking=True)
        finally:
            self.dataset.skip = 0


def build_streaming_train_loader(
    cfg: DataConfig, classes: datasets.ClassLabel, *, batch_size: int, seed: int, batches_multiple: int = 1
) -> StreamingTrainLoader:
    """Training loader over the streamed ``cfg.train_split``, already split between processes.

    Epochs of ⌊rows / (processes · batch_size)⌋ batches per process, rounded down to a multiple of
    ``batches_multiple`` (gradient-accumulation windows); ``rows``: the split's declared size cut by its
    slice (:func:`~vitkd.data.sources.stream_train_split`). The process layout comes from Accelerate's
    ``PartialState``; ``cfg.num_workers`` is lowered to a divisor of the share's shard count
    (:func:`_stream_workers`). Call ``set_epoch`` each epoch.
    """
    state = PartialState()
    stream, rows = stream_train_split(
        cfg, classes, rank=state.process_index, world_size=state.num_processes, seed=seed
    )
    where = f"split {cfg.train_split!r} of {cfg.source!r}"
    whole = rows // (state.num_processes * batch_size)
    batches = whole // batches_multiple * batches_multiple
    if batches < 1:
        fix = ("lower train.grad_accum_steps" if whole else "lower train.batch_size") + " or use more data"
        raise ValueError(
            f"The stream of {where} has {rows} rows: {whole} batch(es) of {batch_size} per process "
            f"({state.num_processes} process(es)), fewer than one accumulation window of {batches_multiple}: {fix}"
        )
    dataset = IndexedStream(
        stream, build_transforms(cfg, seed)[0], classes.num_classes, where=where,
        rank=state.process_index, world_size=state.num_processes, batch_size=batch_size, batches=batches,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=_stream_workers(cfg.num_workers, stream.n_shards),
        pin_memory=cfg.pin_memory,
        collate_fn=collate_train,
    )
    return StreamingTrainLoader(loader)


def _stream_workers(num_workers: int, shards: int) -> int:
    """The most DataLoader workers, at most ``num_workers``, that split ``shards`` shards evenly (datasets
    hands worker ``w`` shards ``w, w + W, …``; uneven counts would give workers unequal shares)."""
    return next((w for w in range(min(num_workers, shards), 0, -1) if shards % w == 0), 0)


def _streaming_loaders(
    cfg: DataConfig, *, batch_size: int, eval_batch_size: int, seed: int, batches_multiple: int
) -> tuple[StreamingTrainLoader, DataLoader, DataInfo]:
    """:func:`build_loaders` with ``cfg.streaming``: the evaluation split loaded, the training split streamed."""
    ((eval_name, evaluation),) = select_splits(cfg, train=False)
    evaluation = _capped(cfg, evaluation)
    classes = evaluation.features["label"]
    train_loader = build_streaming_train_loader(
        cfg, classes, batch_size=batch_size, seed=seed, batches_multiple=batches_multiple
    )
    eval_loader = _eval_loader(
        evaluation, build_transforms(cfg)[1], cfg, split=eval_name, batch_size=eval_batch_size, seed=seed
    )
    return train_loader, eval_loader, _data_info(cfg, classes.names)
