"""From a ``source`` string to a 🤗 ``Dataset`` with exactly an ``image`` and a ``label`` column.

Sources, tried in this order:

1. a builtin name (:data:`vitkd.data.builtin.BUILTINS`);
2. a local folder written by ``Dataset.save_to_disk`` (one split, named by ``Dataset.split`` or
   ``train``) or ``DatasetDict.save_to_disk``;
3. parquet files: a file, a glob, or a folder holding ``*.parquet`` (split names from file/folder names,
   e.g. ``train-00000.parquet``, ``test/…``; default ``train``);
4. an image folder: class sub-folders of images, optionally under split folders (``train/``, ``val/``…);
5. anything else is taken as a 🤗 Hub dataset id (see :mod:`vitkd.data.hub` for offline behaviour).

Columns: the image column is the one with an ``Image`` feature and the label column the ``ClassLabel``
one (``label``, then ``fine_label``, preferred when there are several, e.g. CIFAR-100's fine/coarse);
an integer label column without ``ClassLabel`` becomes one with names ``"0"``..``"K-1"``, K taken
over all splits so every split agrees.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import datasets
import pyarrow.compute as pc
from datasets.data_files import SPLIT_KEYWORDS, contains_wildcards

from vitkd.data.builtin import BUILTINS, load_builtin
from vitkd.data.hub import load_hub_dataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Tried in order when a dataset has several candidate columns.
PREFERRED_IMAGE_COLUMNS = ("image", "img")
PREFERRED_LABEL_COLUMNS = ("label", "fine_label", "labels")
# Split names that mean the same thing (datasets' own keyword table, e.g. validation/valid/val/dev).
SPLIT_ALIASES = tuple(tuple(keywords) for keywords in SPLIT_KEYWORDS.values())
EVAL_SPLIT_CANDIDATES = (*SPLIT_KEYWORDS[datasets.Split.VALIDATION], *SPLIT_KEYWORDS[datasets.Split.TEST])


def open_source(source: str, *, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Every split of ``source`` with its original columns (images are decoded lazily, on access)."""
    if source in BUILTINS:
        return load_builtin(source, cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        return _open_directory(path, cache_dir)
    if path.is_file() and path.suffix == ".parquet":
        return _open_parquet_files([path], cache_dir)
    if contains_wildcards(source):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        if not files or any(f.suffix != ".parquet" for f in files):
            raise ValueError(
                f"data.source glob {source!r} must match parquet files only; it matched {files[:5]}"
            )
        return _open_parquet_files(files, cache_dir)
    if path.exists() or source.startswith((".", "/", "~")):
        raise ValueError(
            f"data.source {source!r} is a path but not a usable dataset (expected a save_to_disk folder, "
            "an image folder, a parquet file, a glob of them, or a folder holding them)"
        )
    return load_hub_dataset(source)


def _open_directory(path: Path, cache_dir: str | None) -> datasets.DatasetDict:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            return datasets.DatasetDict({str(loaded.split or "train"): loaded})
        return loaded
    if next(path.rglob("*.parquet"), None) is not None:
        return datasets.load_dataset("parquet", data_dir=str(path), cache_dir=cache_dir)
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.rglob("*")):
        return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
    raise ValueError(
        f"data.source folder {str(path)!r} holds no dataset: expected dataset_dict.json/state.json "
        "(save_to_disk), parquet files, or class sub-folders of images"
    )


def _split_of_file(path: Path) -> str:
    """Split named by a parquet file's stem or folder (``test-0.parquet``, ``val/x.parquet``), else train."""
    words = set(re.split(r"[-._ 0-9]+", path.stem.lower())) | {path.parent.name.lower()}
    for split, keywords in SPLIT_KEYWORDS.items():
        if words.intersection(keywords):
            return str(split)
    return "train"


def _open_parquet_files(files: list[Path], cache_dir: str | None) -> datasets.DatasetDict:
    data_files: dict[str, list[str]] = {}
    for f in files:
        data_files.setdefault(_split_of_file(f), []).append(str(f))
    return datasets.load_dataset("parquet", data_files=data_files, cache_dir=cache_dir)


def resolve_split(splits: datasets.DatasetDict, requested: str, source: str) -> str:
    """Name under which ``requested`` exists in ``splits``, accepting aliases (``val`` ↔ ``validation``)."""
    if requested in splits:
        return requested
    for aliases in SPLIT_ALIASES:
        if requested in aliases:
            present = [name for name in aliases if name in splits]
            if present:
                return present[0]
    raise ValueError(f"Split {requested!r} not found in {source!r}; available splits: {sorted(splits)}")


def _column_listing(features: datasets.Features) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in features.items())


def _pick(candidates: list[str], preferred: tuple[str, ...]) -> str | None:
    """The only candidate, else the first preferred name among them, else None (ambiguous or empty)."""
    if len(candidates) == 1:
        return candidates[0]
    return next((name for name in preferred if name in candidates), None)


def _image_column(features: datasets.Features, requested: str | None) -> str:
    if requested is not None:
        if not isinstance(features.get(requested), datasets.Image):
            raise ValueError(
                f"data.image_column {requested!r} is not an Image column; columns: "
                f"{_column_listing(features)}"
            )
        return requested
    candidates = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    chosen = _pick(candidates, PREFERRED_IMAGE_COLUMNS)
    if chosen is None:
        raise ValueError(
            f"Cannot tell which column holds the images ({'none' if not candidates else 'several'}"
            f" is an Image feature); set data.image_column. Columns: {_column_listing(features)}"
        )
    return chosen


def _is_integer(feature: object) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _label_column(features: datasets.Features, requested: str | None) -> str:
    if requested is not None:
        if not (
            isinstance(features.get(requested), datasets.ClassLabel) or _is_integer(features.get(requested))
        ):
            raise ValueError(
                f"data.label_column {requested!r} is not a ClassLabel or integer column; columns: "
                f"{_column_listing(features)}"
            )
        return requested
    class_labels = [name for name, f in features.items() if isinstance(f, datasets.ClassLabel)]
    candidates = class_labels or [name for name, f in features.items() if _is_integer(f)]
    chosen = _pick(candidates, PREFERRED_LABEL_COLUMNS)
    if chosen is None:
        found = f"several candidates {candidates}" if candidates else "no ClassLabel or integer column"
        raise ValueError(
            f"Cannot tell which column holds the labels ({found}); set data.label_column. "
            f"Columns: {_column_listing(features)}"
        )
    return chosen


def _class_label_for_integers(splits: datasets.DatasetDict, column: str) -> datasets.ClassLabel:
    """ClassLabel named "0".."K-1" with K = 1 + the largest label in any split (at least one class)."""
    maxima = [pc.max(ds.with_format("arrow")[column]).as_py() for ds in splits.values()]
    largest = max((m for m in maxima if m is not None), default=0)
    return datasets.ClassLabel(names=[str(k) for k in range(max(largest, 0) + 1)])


def standardise(
    splits: datasets.DatasetDict,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> datasets.Dataset:
    """Split ``split`` (an existing key) reduced to columns ``image`` (Image) and ``label`` (ClassLabel)."""
    ds = splits[split]
    image_col = _image_column(ds.features, image_column)
    label_col = _label_column(ds.features, label_column)
    if image_col == label_col:
        raise ValueError(f"data.image_column and data.label_column are both {image_col!r}")
    ds = ds.select_columns([image_col, label_col])
    if not isinstance(ds.features[label_col], datasets.ClassLabel):
        ds = ds.cast_column(label_col, _class_label_for_integers(splits, label_col))
    renames = {old: new for old, new in ((image_col, "image"), (label_col, "label")) if old != new}
    return ds.rename_columns(renames) if renames else ds


def unlabelled_count(ds: datasets.Dataset) -> int:
    """How many samples of a standardised dataset carry no label (-1, e.g. ImageNet's test split)."""
    return int(pc.sum(pc.less(ds.with_format("arrow")["label"], 0)).as_py() or 0)


def require_labels(ds: datasets.Dataset, split: str, source: str) -> datasets.Dataset:
    """``ds`` unchanged, or a ValueError when some of its labels are missing (-1)."""
    missing = unlabelled_count(ds)
    if missing:
        raise ValueError(
            f"Split {split!r} of {source!r} has {missing} of {len(ds)} samples without a label (-1); it "
            "cannot be used for training or evaluation. Choose a labelled split (data.train_split / "
            "data.eval_split)."
        )
    return ds


def load_dataset(
    source: str,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Split ``split`` of ``source`` with exactly the columns ``image`` (Image) and ``label`` (ClassLabel).

    Raises ValueError for an unknown split (listing the available ones), undecidable or wrong columns
    (listing them) and unlabelled samples; :class:`~vitkd.data.hub.DatasetUnavailableError` when a
    Hub dataset can be neither downloaded nor found in the cache.
    """
    splits = open_source(source, cache_dir=cache_dir)
    name = resolve_split(splits, split, source)
    ds = standardise(splits, name, image_column=image_column, label_column=label_column)
    return require_labels(ds, name, source)
