"""Teacher-logit cache: run the teacher once per (epoch, sample, view), then train students from the logits.

The training loader's augmentation is a function of (data seed, epoch, row, view) (see
:mod:`vitkd.data.transforms`), so a cache written for a recipe replays exactly: the images a run sees
are the ones the stored logits were computed on. A cache folder holds::

    manifest.json                                 what the logits depend on (checked before training)
    epoch_0000/shard-00000-of-00002.safetensors   rows written by process 0 of 2 in epoch 0
    ...

Each shard (``safetensors``) holds, for the rows one process wrote in one epoch: ``index`` int64 [n],
``label`` int64 [n] and per view ``v``: dense ``logits.v`` [n, C] in the cache dtype, or with ``topk``
``topk_values.v`` [n, k], ``topk_indices.v`` int32 [n, k], ``target.v`` [n] (the label's logit) and
``logsumexp.v`` float32 [n]. A process writes each epoch's shard to a temporary name and renames it, so
a killed run resumes at the first epoch whose shard is missing. Reading does not depend on the process
count that wrote it.

Top-k caches rebuild dense logits per batch: the kept classes (top k and the label) get their stored
logits, every other class the logit that gives it an equal share of the remaining softmax probability
at temperature 1 (from the stored log-sum-exp): probabilities at T = 1 are exact for the kept classes,
the rest is spread evenly (TinyViT's approximation, on logits). Losses that use statistics across the
batch of every class's logit (``DistillationLoss.needs_dense_teacher_logits``: LumiNet, DIST) refuse it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset

import vitkd
from vitkd.data import DataInfo, build_loaders
from vitkd.data.loaders import collate_train
from vitkd.data.transforms import SampleKey, train_views
from vitkd.recipe import Recipe, recipe_to_dict
from vitkd.run_folder import file_sha256

__all__ = [
    "CACHE_DTYPES",
    "CacheMismatchError",
    "TeacherLogitCache",
    "bytes_per_sample",
    "cache_manifest",
    "dense_from_topk",
    "verify_cache",
    "write_cache",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# data keys that change how fast the loader runs, not what it produces
_LOADER_ONLY_KEYS = ("num_workers", "persistent_workers", "pin_memory", "cache_dir")


class CacheMismatchError(ValueError):
    """A cache that does not belong to the recipe (or the loss) it is used with; lists every difference."""


# ----------------------------------------------------------------------------- manifest


def cache_manifest(
    recipe: Recipe, info: DataInfo, *, num_rows: int, epochs: int, dtype: str, topk: int | None
) -> dict[str, Any]:
    """What a cache of ``recipe``'s teacher logits depends on, as written to ``manifest.json``.

    ``num_rows``: rows of the training split (after ``train_fraction``); ``epochs``: epochs cached.
    """
    data = {k: v for k, v in recipe_to_dict(recipe)["data"].items() if k not in _LOADER_ONLY_KEYS}
    return {
        "format": FORMAT_VERSION,
        "vitkd_version": vitkd.__version__,
        "teacher": [
            {"name": t.name, "checkpoint": t.checkpoint, "kwargs": t.kwargs,
             "sha256": file_sha256(t.checkpoint) if t.checkpoint else None}
            for t in recipe.teachers
        ],
        "data": data,
        "seed": recipe.train.seed,
        "transforms": [repr(view) for view in train_views(recipe.data)],
        "views": 2 if recipe.data.two_view else 1,
        "num_classes": info.num_classes,
        "num_rows": num_rows,
        "epochs": epochs,
        "dtype": dtype,
        "topk": topk,
    }


def _differences(expected: dict, found: dict, keys: Iterable[str], prefix: str = "") -> list[str]:
    """'key: cache X, recipe Y' for every key whose values differ (nested mappings key by key)."""
    out = []
    for key in keys:
        want, have = expected.get(key), found.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            out += _differences(want, have, sorted(set(want) | set(have)), f"{prefix}{key}.")
        elif want != have:
            out.append(f"{prefix}{key}: cache {have!r}, recipe {want!r}")
    return out


def _teacher_differences(expected: list[dict], found: list[dict]) -> list[str]:
    """Teachers compare by name, kwargs and checkpoint content (sha256), not by the checkpoint's path."""
    if len(expected) != len(found):
        return [f"teacher: cache has {len(found)} teacher(s), recipe {len(expected)}"]
    out = []
    for i, (want, have) in enumerate(zip(expected, found, strict=True)):
        out += _differences(want, have, ("name", "kwargs", "sha256"), f"teacher[{i}].")
    return out


# ----------------------------------------------------------------------------- writing


def _shard_path(root: Path, epoch: int, rank: int, world: int) -> Path:
    return root / f"epoch_{epoch:04d}" / f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _complete_shards(root: Path, epoch: int) -> list[Path] | None:
    """The shards of a complete set written for ``epoch`` (by any process count), or None."""
    folder = root / f"epoch_{epoch:04d}"
    by_world: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("shard-*-of-*.safetensors")):
        by_world.setdefault(int(path.stem.rsplit("-", 1)[1]), []).append(path)
    complete = [paths for world, paths in by_world.items() if len(paths) == world]
    return complete[0] if complete else None


def bytes_per_sample(manifest: dict) -> int:
    """Bytes one training sample adds to one cached epoch (all views), shard headers aside."""
    itemsize = torch.tensor([], dtype=CACHE_DTYPES[manifest["dtype"]]).element_size()
    k = manifest["topk"]
    per_view = manifest["num_classes"] * itemsize if k is None else k * (itemsize + 4) + itemsize + 4
    return 16 + manifest["views"] * per_view  # + index and label, int64


def _check_disk(root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if needed > free:
        raise OSError(f"the cache needs {needed / 1e9:.2f} GB more in {root}, only {free / 1e9:.2f} GB are free: "
                      "free some space, use --dtype float16 or --topk K, or choose another --out")


def _start_or_check_manifest(root: Path, manifest: dict) -> None:
    """Write the manifest of a new cache, or check that an existing one (a resumed run) is the same."""
    path = root / MANIFEST
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(path)
        return
    found = json.loads(path.read_text())
    diffs = _differences(manifest, found, [k for k in manifest if k != "teacher"])
    diffs += _teacher_differences(manifest["teacher"], found.get("teacher", []))
    if diffs:
        raise CacheMismatchError(f"{root} holds another cache; differences: " + "; ".join(diffs)
                                 + ". Choose another --out, or delete the folder to rewrite it")


def write_cache(
    recipe: Recipe,
    out: str | Path,
    *,
    epochs: int | None = None,
    dtype: str = "float32",
    topk: int | None = None,
    batch_size: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run ``recipe``'s teacher on every training sample's augmented view(s) of ``epochs`` epochs
    (default ``train.epochs``) and store the logits in ``out``; resumes a partial cache.

    Under ``accelerate launch`` / ``torchrun`` each process writes the rows ``rank::world`` of each epoch.
    ``batch_size`` defaults to ``train.batch_size``. Returns ``out``.
    """
    from accelerate import PartialState

    from vitkd.engine.build import build_teacher

    if dtype not in CACHE_DTYPES:
        raise ValueError(f"--dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    if not recipe.teachers:
        raise ValueError("the recipe has no teacher (distill.method none?): nothing to cache")
    if any(t.checkpoint is None for t in recipe.teachers):
        raise ValueError("teacher.checkpoint is empty: a cache of random weights could not be matched to a run; "
                         "set teacher.checkpoint")
    if recipe.data.streaming:
        raise ValueError("data.streaming: a cache stores logits per dataset row, and a streamed split has no fixed "
                         "rows; set data.streaming: false to cache")
    # without cpu=True Accelerate treats N CPU processes under torchrun as N independent runs
    state = PartialState(cpu=not torch.cuda.is_available())
    root, epochs = Path(out), epochs or recipe.train.epochs
    train_loader, _, info = build_loaders(recipe.data, batch_size=2, seed=recipe.train.seed)
    rows = train_loader.dataset  # augmented rows, looked up by SampleKey
    if topk is not None and not 1 <= topk < info.num_classes:
        raise ValueError(f"--topk must be in 1..{info.num_classes - 1} (fewer than the classes), got {topk}")
    manifest = cache_manifest(recipe, info, num_rows=len(rows), epochs=epochs, dtype=dtype, topk=topk)
    if state.is_main_process:
        _start_or_check_manifest(root, manifest)
    state.wait_for_everyone()
    todo = [e for e in range(epochs) if _complete_shards(root, e) is None]
    needed = len(todo) * len(rows) * bytes_per_sample(manifest)
    if state.is_main_process:
        log(f"teacher cache {root}: {len(todo)} of {epochs} epochs to write, {len(rows)} samples × "
            f"{manifest['views']} view(s), {bytes_per_sample(manifest)} B per sample per epoch: "
            f"{needed / 1e9:.3f} GB needed")
    _check_disk(root, needed)
    teacher = build_teacher(recipe.teachers, info).to(state.device).eval()
    for epoch in todo:
        path = _shard_path(root, epoch, state.process_index, state.num_processes)
        if not path.is_file():
            mine = range(state.process_index, len(rows), state.num_processes)
            tensors = _epoch_logits(teacher, rows, epoch, mine, recipe, batch_size, state.device, dtype, topk)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file(tensors, str(tmp), metadata={"epoch": str(epoch)})
            tmp.replace(path)
        state.wait_for_everyone()
        if state.is_main_process:
            log(f"epoch {epoch + 1}/{epochs} cached")
    return root


def _epoch_logits(
    teacher: nn.Module, rows: Dataset, epoch: int, mine: range, recipe: Recipe, batch_size: int | None,
    device: torch.device, dtype: str, topk: int | None,
) -> dict[str, Tensor]:
    """The shard tensors of rows ``mine`` in ``epoch`` (see the module docstring)."""
    keys = [SampleKey(epoch, i) for i in mine]
    loader = DataLoader(
        rows, batch_sampler=BatchSampler(keys, batch_size or recipe.train.batch_size, drop_last=False),
        collate_fn=collate_train, num_workers=recipe.data.num_workers,
    )
    parts: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        for images, labels, indices in loader:
            views = images if isinstance(images, tuple) else (images,)
            batch = {"index": indices, "label": labels}
            for v, view in enumerate(views):
                logits = teacher(view.to(device)).float().cpu()
                batch.update(_encode(logits, labels, v, CACHE_DTYPES[dtype], topk))
            for name, tensor in batch.items():
                parts.setdefault(name, []).append(tensor)
    return {name: torch.cat(chunks).contiguous() for name, chunks in parts.items()}


def _encode(logits: Tensor, labels: Tensor, view: int, dtype: torch.dtype, topk: int | None) -> dict[str, Tensor]:
    """Float32 logits (B, C) → the shard entries of one view."""
    if topk is None:
        return {f"logits.{view}": logits.to(dtype)}
    values, indices = logits.topk(topk, dim=1)
    return {
        f"topk_values.{view}": values.to(dtype),
        f"topk_indices.{view}": indices.to(torch.int32),
        f"target.{view}": logits.gather(1, labels[:, None])[:, 0].to(dtype),
        f"logsumexp.{view}": logits.logsumexp(dim=1),
    }


def dense_from_topk(values: Tensor, indices: Tensor, target: Tensor, labels: Tensor, lse: Tensor,
                    num_classes: int) -> Tensor:
    """Rebuild dense float32 logits (B, C) from a top-k entry (module docstring): kept classes exact,
    the others an equal share of the remaining softmax mass at T = 1."""
    kept = torch.zeros(values.shape[0], num_classes, dtype=torch.bool)
    kept.scatter_(1, indices.long(), True)
    kept.scatter_(1, labels[:, None], True)
    dense = torch.empty(values.shape[0], num_classes)
    dense.scatter_(1, indices.long(), values.float())
    dense.scatter_(1, labels[:, None], target.float()[:, None])
    kept_mass = torch.where(kept, (dense - lse[:, None]).exp(), torch.zeros(())).sum(1)
    rest = (num_classes - kept.sum(1)).clamp(min=1)
    fill = lse + ((1 - kept_mass).clamp(min=1e-12) / rest).log()
    return torch.where(kept, dense, fill[:, None])


# ----------------------------------------------------------------------------- reading


@dataclass
class _Epoch:
    """One cached epoch's entries, sorted by dataset row (row r at position r)."""

    epoch: int
    entries: dict[str, Tensor]


class TeacherLogitCache:
    """Reads a cache folder: ``logits(epoch, indices, view)`` → float32 (B, C), one epoch held in memory.

    Open with :meth:`open`, then :meth:`check` it against the run's recipe and loss before training.
    """

    def __init__(self, root: Path, manifest: dict, *, reuse_epochs: bool = False) -> None:
        self.root, self.manifest, self.reuse_epochs = root, manifest, reuse_epochs
        self._current: _Epoch | None = None
        self._cached: int | None = None

    @classmethod
    def open(cls, path: str | Path, *, reuse_epochs: bool = False) -> TeacherLogitCache:
        root = Path(path)
        if not (root / MANIFEST).is_file():
            raise FileNotFoundError(f"teacher.cache: {root} holds no {MANIFEST}; write one with "
                                    f"scripts/cache_teacher.py --recipe R --out {root}")
        manifest = json.loads((root / MANIFEST).read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise CacheMismatchError(f"{root / MANIFEST} has format {manifest.get('format')!r}; this vitkd reads "
                                     f"format {FORMAT_VERSION}: rewrite the cache")
        return cls(root, manifest, reuse_epochs=reuse_epochs)

    @property
    def data_seed(self) -> int:
        """The seed the cached augmentations were drawn with (pass to ``build_loaders(data_seed=...)``)."""
        return self.manifest["seed"]

    @property
    def is_topk(self) -> bool:
        return self.manifest["topk"] is not None

    def cached_epochs(self) -> int:
        """Epochs 0..n-1 that are complete on disk (a cache being written may hold fewer than planned)."""
        if self._cached is None:
            n = 0
            while n < self.manifest["epochs"] and _complete_shards(self.root, n) is not None:
                n += 1
            self._cached = n
        return self._cached

    def check_matches(self, recipe: Recipe, info: DataInfo, *, num_rows: int) -> None:
        """Refuse (CacheMismatchError, every difference listed) a cache not written for ``recipe``'s data,
        transforms and teacher (compared by checkpoint content)."""
        expected = cache_manifest(recipe, info, num_rows=num_rows, epochs=recipe.train.epochs,
                                  dtype=self.manifest["dtype"], topk=self.manifest["topk"])
        diffs = _differences(expected, self.manifest, ("data", "transforms", "views", "num_classes", "num_rows"))
        diffs += _teacher_differences(expected["teacher"], self.manifest["teacher"])
        if diffs:
            raise CacheMismatchError(f"teacher.cache {self.root} was written for another setting: " + "; ".join(diffs)
                                     + ". Write a cache for this recipe with scripts/cache_teacher.py")

    def check(self, recipe: Recipe, info: DataInfo, *, num_rows: int, criterion: nn.Module | None) -> None:
        """:meth:`check_matches`, and refuse a top-k cache for a loss that needs every logit, or a run
        longer than the cached epochs without ``reuse_epochs``."""
        self.check_matches(recipe, info, num_rows=num_rows)
        if self.is_topk and getattr(criterion, "needs_dense_teacher_logits", False):
            raise CacheMismatchError(
                f"teacher.cache {self.root} stores the top-{self.manifest['topk']} logits only, but "
                f"{type(criterion).__name__} uses statistics of every class's logit across the batch, which a "
                "top-k cache cannot give: write a dense cache (no --topk)")
        cached = self.cached_epochs()
        if cached == 0:
            raise CacheMismatchError(f"teacher.cache {self.root} holds no complete epoch yet: finish writing it "
                                     "(rerun scripts/cache_teacher.py with the same arguments)")
        if recipe.train.epochs > cached and not self.reuse_epochs:
            raise CacheMismatchError(
                f"train.epochs is {recipe.train.epochs} but teacher.cache {self.root} holds {cached} epoch(s): "
                "cache more epochs (--epochs), or set teacher.cache.reuse_epochs: true to read cached epoch "
                "e mod N in epoch e")

    def logits(self, epoch: int, indices: Tensor, view: int) -> Tensor:
        """Teacher logits float32 (B, C) of rows ``indices`` (B,) in 0-based ``epoch``, view ``view``."""
        entries = self._epoch(epoch).entries
        rows = indices.cpu().long()
        if self.is_topk:
            return dense_from_topk(
                entries[f"topk_values.{view}"][rows], entries[f"topk_indices.{view}"][rows],
                entries[f"target.{view}"][rows], entries["label"][rows], entries[f"logsumexp.{view}"][rows],
                self.manifest["num_classes"],
            )
        return entries[f"logits.{view}"][rows].float()

    def _epoch(self, epoch: int) -> _Epoch:
        stored = epoch % self.cached_epochs() if self.reuse_epochs else epoch
        if self._current is not None and self._current.epoch == stored:
            return self._current
        shards = _complete_shards(self.root, stored)
        if shards is None:
            raise CacheMismatchError(f"teacher.cache {self.root} has no complete epoch {stored} (0-based)")
        self._current = _Epoch(stored, _load_sorted(shards, self.manifest["num_rows"]))
        return self._current


def _load_sorted(shards: list[Path], num_rows: int) -> dict[str, Tensor]:
    """Concatenate an epoch's shards and order the entries by dataset row; every row exactly once."""
    parts: dict[str, list[Tensor]] = {}
    for path in shards:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                parts.setdefault(name, []).append(f.get_tensor(name))
    entries = {name: torch.cat(chunks) for name, chunks in parts.items()}
    order = entries["index"].argsort()
    if not torch.equal(entries["index"][order], torch.arange(num_rows)):
        raise CacheMismatchError(f"the shards {[p.name for p in shards]} do not hold each of the {num_rows} rows once")
    return {name: tensor[order] for name, tensor in entries.items()}


# ----------------------------------------------------------------------------- verification


def verify_cache(recipe: Recipe, path: str | Path, samples: int, *, seed: int = 0) -> float:
    """Recompute ``samples`` random cached entries (epoch, row, view) with the live teacher; return the
    largest absolute logit difference (for top-k caches: over the stored values and the label's logit)."""
    from vitkd.engine.build import build_teacher

    cache = TeacherLogitCache.open(path)
    train_loader, _, info = build_loaders(recipe.data, batch_size=2, seed=recipe.train.seed, data_seed=cache.data_seed)
    rows = train_loader.dataset
    cache.check_matches(recipe, info, num_rows=len(rows))
    teacher = build_teacher(recipe.teachers, info).eval()
    generator = torch.Generator().manual_seed(seed)
    picks = [(int(torch.randint(cache.cached_epochs(), (), generator=generator)),
              int(torch.randint(len(rows), (), generator=generator)),
              int(torch.randint(cache.manifest["views"], (), generator=generator))) for _ in range(samples)]
    images = torch.stack([rows[SampleKey(epoch, row)]["image"][view] for epoch, row, view in picks])
    with torch.no_grad():
        live = teacher(images).float()  # one batch, as the writer runs the teacher on batches
    worst = 0.0
    for (epoch, row, view), live_logits in zip(picks, live, strict=True):
        stored = cache.logits(epoch, torch.tensor([row]), view)[0]
        if cache.is_topk:  # compare what is stored, not the filled-in classes
            kept = cache._epoch(epoch).entries[f"topk_indices.{view}"][row].long()
            live_logits, stored = live_logits[kept], stored[kept]
        worst = max(worst, float((live_logits - stored).abs().max()))
    return worst
