"""From a ``source`` string to 🤗 ``Dataset`` splits with exactly an ``image`` and a ``label`` column.

Sources, tried in this order:

1. a builtin name (:data:`vitkd.data.builtin.BUILTINS`); a near miss without a ``/`` (``digit``) is
   refused with a did-you-mean before any Hub lookup;
2. a local folder written by ``Dataset.save_to_disk`` (one split, named by ``Dataset.split`` or
   ``train``) or ``DatasetDict.save_to_disk``;
3. parquet files: a file or a glob (split names from file/folder names, e.g. ``train-00000.parquet``,
   ``test/…``; default ``train``);
4. a folder of data files read by 🤗 datasets' packaged loaders: parquet files, or class sub-folders of
   images, optionally under split folders (``train/``, ``val/``…), or the ``configs`` of a
   ``README.md`` dataset card (``data.name`` picks one);
5. anything else is a 🤗 Hub dataset id (see :mod:`vitkd.data.hub_datasets`: only the files of the
   splits in use are downloaded, ``data.name``/``data.revision`` select configuration and revision).

Only the splits a run uses are read: a :class:`SplitSource` lists split names without reading any, and
reads (or downloads and prepares) one split when it is first asked for, so a damaged or absent unused
split does not matter. A split may be sliced with 🤗 datasets' syntax: ``train[:10%]``, ``train[:5000]``,
``validation[100:200]``.

Columns: the image column is the one with an ``Image`` feature and the label column the ``ClassLabel``
one (``label``, then ``fine_label``, preferred when there are several, e.g. CIFAR-100's fine/coarse);
an integer label column without ``ClassLabel`` becomes one with names ``"0"``..``"K-1"``, K taken
over the splits loaded together (training and evaluation), so they agree. Labels are checked before
any training: ``-1`` (unlabelled) or out of the class range is an error naming split and column.
"""

from __future__ import annotations

import difflib
import glob
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets.data_files import (
    SPLIT_KEYWORDS,
    DataFilesList,
    contains_wildcards,
    get_data_patterns,
    sanitize_patterns,
)
from datasets.distributed import split_dataset_by_node
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from vitkd.data import hub_datasets
from vitkd.data.builtin import BUILTINS, BuiltinNotInstalled, load_builtin
from vitkd.data.config import DataConfig
from vitkd.data.hub_datasets import CARD_FILE, DatasetUnavailableError
from vitkd.data.splits import parse_split, resolve_split, stream_rows, take_slice

# Tried in order when a dataset has several candidate columns.
PREFERRED_IMAGE_COLUMNS = ("image", "img")
PREFERRED_LABEL_COLUMNS = ("label", "fine_label", "labels")
EVAL_SPLIT_CANDIDATES = (*SPLIT_KEYWORDS[datasets.Split.VALIDATION], *SPLIT_KEYWORDS[datasets.Split.TEST])
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# A folder without a dataset card is a dataset when it holds images or parquet files.
DATA_SUFFIXES = IMAGE_SUFFIXES | {".parquet"}
# Shards a local dataset is cut into when streamed, so processes and workers can share it out.
STREAM_SHARDS = 64
# Errors PIL raises for a damaged image file (truncated, wrong format, broken chunks).
IMAGE_DECODE_ERRORS = (OSError, SyntaxError)


@dataclass
class SplitSource:
    """The splits of one source, listed without reading them; each split is read when first asked for.

    ``read(split)`` returns the split with its original columns (images decoded lazily, on access);
    ``stream(split)`` the same rows as a 🤗 ``IterableDataset``, read as they are consumed.
    """

    source: str
    split_names: tuple[str, ...]
    _read: Callable[[str], datasets.Dataset]
    _stream: Callable[[str], datasets.IterableDataset]
    _cache: dict[str, datasets.Dataset] = field(default_factory=dict, repr=False)

    def read(self, split: str) -> datasets.Dataset:
        """Split ``split`` (an entry of ``split_names``); ValueError naming it when its files are damaged."""
        if split not in self._cache:
            try:
                self._cache[split] = self._read(split)
            except (pa.ArrowException, datasets.exceptions.DatasetGenerationError) as exc:
                raise ValueError(
                    f"Cannot read split {split!r} of {self.source!r}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._cache[split]

    def stream(self, split: str) -> datasets.IterableDataset:
        return self._stream(split)


def _dict_source(source: str, splits: datasets.DatasetDict) -> SplitSource:
    return SplitSource(
        source, tuple(splits), splits.__getitem__, lambda s: _iterable(splits[s], s)
    )


def _iterable(ds: datasets.Dataset, split: str) -> datasets.IterableDataset:
    """An in-memory split as a stream of :data:`STREAM_SHARDS` shards that declares its length."""
    return _declare_rows(ds.to_iterable_dataset(STREAM_SHARDS), split, len(ds))


def _declare_rows(stream: datasets.IterableDataset, split: str, rows: int | None) -> datasets.IterableDataset:
    """``stream`` declaring ``rows`` rows for ``split`` as a Hub card's ``dataset_info`` does (a streamed
    epoch's length comes from there), unless it declares a size already or ``rows`` is None."""
    if rows is not None and not (stream.info.splits and split in stream.info.splits):
        stream.info.splits = datasets.SplitDict({split: datasets.SplitInfo(split, num_examples=rows)})
    return stream


def _file_rows(files: Sequence[str]) -> int | None:
    """Rows of a split counted from its local files without reading the data: parquet footers, or one
    row per file of a folder of images only; None for other layouts."""
    suffixes = {Path(f).suffix.lower() for f in files}
    if suffixes == {".parquet"}:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return len(files) if files and suffixes <= IMAGE_SUFFIXES else None


def _refuse_hub_options(source: str, kind: str, name: str | None, revision: str | None) -> None:
    if name is not None:
        raise ValueError(
            f"data.name {name!r} selects a configuration of a Hub dataset or of a folder whose README.md "
            f"lists configs; {source!r} is {kind} and has none: remove data.name"
        )
    if revision is not None:
        raise ValueError(f"data.revision applies to Hub datasets only; {source!r} is {kind}: remove it")


def open_source(
    source: str, *, name: str | None = None, revision: str | None = None, cache_dir: str | None = None
) -> SplitSource:
    """The splits of ``source`` (see the module docstring for the forms), none of them read yet.

    ``name``/``revision``: the dataset configuration and the Hub branch, tag or commit (Hub ids; a
    folder with a README.md dataset card accepts ``name``). Raises ValueError for an empty source, a
    near miss of a builtin name, or a path that holds no dataset; DatasetUnavailableError when a Hub
    dataset can be neither downloaded nor found in the cache.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"data.source must name a dataset, got {source!r} (an empty path would mean the current folder)"
        )
    if source in BUILTINS:
        _refuse_hub_options(source, "a builtin dataset", name, revision)
        try:
            return _dict_source(source, load_builtin(source, cache_dir))
        except BuiltinNotInstalled as missing:
            return _hub_source(
                missing.hub_id, None, None, cache_dir, context=f"{missing}, and the Hub fallback"
            )
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            _refuse_hub_options(source, "a save_to_disk folder", name, revision)
            return _saved_source(source, path)
        _refuse_hub_options(source, "a local folder", None, revision)
        return _folder_source(source, path, name, cache_dir)
    if (path.is_file() and path.suffix == ".parquet") or contains_wildcards(source):
        _refuse_hub_options(source, "parquet files", name, revision)
        return _parquet_source(source, path, cache_dir)
    if path.exists() or source.startswith((".", "/", "~")):
        raise ValueError(
            f"data.source {source!r} is a path but not a usable dataset (expected a save_to_disk folder, "
            "an image folder, a parquet file, a glob of them, or a folder holding them)"
        )
    near = difflib.get_close_matches(source, BUILTINS, n=1)
    if "/" not in source and near:
        raise ValueError(
            f"data.source {source!r} is not a builtin dataset: did you mean {near[0]!r}? (builtins: "
            f"{sorted(BUILTINS)}; name a Hub dataset as 'namespace/name')"
        )
    return _hub_source(source, name, revision, cache_dir)


def _saved_source(source: str, path: Path) -> SplitSource:
    """A ``save_to_disk`` folder: a DatasetDict's splits are separate sub-folders, each loaded on use."""
    if (path / "dataset_dict.json").is_file():
        names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        read = lambda split: _load_saved(path / split)  # noqa: E731
        return SplitSource(source, tuple(names), read, lambda s: _iterable(read(s), s))
    single = _load_saved(path)
    return _dict_source(source, datasets.DatasetDict({str(single.split or "train"): single}))


def _load_saved(folder: Path) -> datasets.Dataset:
    """``load_from_disk`` of one saved Dataset; an empty one (which datasets saves with no data file and
    then fails to load with an IndexError) comes back as an empty Dataset with its features."""
    if json.loads((folder / "state.json").read_text())["_data_files"]:
        return datasets.load_from_disk(str(folder))
    features = datasets.DatasetInfo.from_directory(str(folder)).features
    return datasets.Dataset.from_dict({name: [] for name in features}, features=features)


def _split_of_file(path: Path) -> str:
    """Split named by a parquet file's stem or folder (``test-0.parquet``, ``val/x.parquet``), else train."""
    words = set(re.split(r"[-._ 0-9]+", path.stem.lower())) | {path.parent.name.lower()}
    for split, keywords in SPLIT_KEYWORDS.items():
        if words.intersection(keywords):
            return str(split)
    return "train"


def _parquet_source(source: str, path: Path, cache_dir: str | None) -> SplitSource:
    files = [path] if path.is_file() else sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    if not files or any(f.suffix != ".parquet" for f in files):
        raise ValueError(f"data.source glob {source!r} must match parquet files only; it matched {files[:5]}")
    by_split: dict[str, list[str]] = {}
    for f in files:
        by_split.setdefault(_split_of_file(f), []).append(str(f))

    def load(split: str, streaming: bool = False):
        return datasets.load_dataset(
            "parquet",
            data_files={split: by_split[split]},
            split=split,
            cache_dir=cache_dir,
            streaming=streaming,
        )

    return SplitSource(
        source, tuple(by_split), load, lambda s: _declare_rows(load(s, streaming=True), s, _file_rows(by_split[s]))
    )


def folder_split_files(root: Path, name: str | None) -> dict[str, list[str]]:
    """{split: [data files]} of a folder, by 🤗 datasets' rules, listing only splits whose files exist.

    The folder's README.md ``configs`` decide when present (``name`` picks one, default: the card's
    default); otherwise datasets' inference from file and folder names. A split whose files are all
    absent (e.g. a Hub snapshot where only the splits in use were downloaded) is left out. Without a
    card, a folder holding neither images nor parquet files is refused rather than read as text.
    """
    card = root / CARD_FILE
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(card).data) if card.is_file() else {}
    if name is not None and name not in configs:
        raise ValueError(
            f"data.name {name!r} is not a configuration of {str(root)!r}; its README.md lists "
            f"{sorted(configs) or 'none'}"
        )
    chosen = (name or configs.get_default_config_name()) if configs else None
    if configs and chosen is None:
        raise ValueError(f"{str(root)!r} has several configurations {sorted(configs)}: set data.name")
    config = configs[chosen] if configs else {}
    base = root / config.get("data_dir", "")
    if "data_files" in config:
        patterns = sanitize_patterns(config["data_files"])
    else:
        try:
            patterns = get_data_patterns(str(base))
        except datasets.exceptions.EmptyDatasetError:
            patterns = {}
    files: dict[str, list[str]] = {}
    for split, split_patterns in patterns.items():
        try:
            files[str(split)] = list(DataFilesList.from_patterns(split_patterns, base_path=str(base)))
        except FileNotFoundError:
            continue
    suffixes = {Path(f).suffix.lower() for split_files in files.values() for f in split_files}
    if not files or not (configs or suffixes & DATA_SUFFIXES):
        raise ValueError(
            f"data.source folder {str(root)!r} holds no dataset: expected dataset_dict.json/state.json "
            "(save_to_disk), parquet files, or class sub-folders of images"
        )
    return files


def _read_folder_split(
    root: Path, name: str | None, split: str, files: list[str], cache_dir: str | None, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a folder, from exactly ``files`` (datasets' ``split=`` alone would prepare every split)."""
    return datasets.load_dataset(
        str(root), name, data_files={split: files}, split=split, cache_dir=cache_dir, streaming=streaming
    )


def _folder_source(source: str, root: Path, name: str | None, cache_dir: str | None) -> SplitSource:
    files = folder_split_files(root, name)
    return SplitSource(
        source,
        tuple(files),
        lambda s: _read_folder_split(root, name, s, files[s], cache_dir),
        lambda s: _declare_rows(_read_folder_split(root, name, s, files[s], cache_dir, streaming=True), s,
                                _file_rows(files[s])),
    )


def _hub_source(
    repo_id: str, name: str | None, revision: str | None, cache_dir: str | None, *, context: str = ""
) -> SplitSource:
    """Hub dataset: split files listed online and downloaded per split, or the cached snapshot offline."""
    reason = hub_datasets.why_offline()
    try:
        if reason is not None:
            root = hub_datasets.cached_hub_snapshot(repo_id, revision, reason)
            return _offline_hub_source(repo_id, _folder_source(repo_id, root, name, cache_dir), reason)
        commit, files = hub_datasets.remote_split_files(repo_id, name=name, revision=revision)
    except DatasetUnavailableError as exc:
        if context:
            raise DatasetUnavailableError(f"{context} failed: {exc}") from exc
        raise

    def read(split: str) -> datasets.Dataset:
        root = hub_datasets.download_hub_files(repo_id, commit, files[split])
        return _read_folder_split(root, name, split, [str(root / p) for p in files[split]], cache_dir)

    def stream(split: str) -> datasets.IterableDataset:
        return datasets.load_dataset(repo_id, name, revision=commit, split=split, streaming=True)

    return SplitSource(repo_id, tuple(files), read, stream)


def _offline_hub_source(repo_id: str, cached: SplitSource, reason: str) -> SplitSource:
    def stream(split: str) -> datasets.IterableDataset:
        raise DatasetUnavailableError(
            f"data.streaming reads {repo_id!r} from the Hub, but {reason}; set data.streaming: false to "
            "train from the cached copy"
        )

    return SplitSource(repo_id, cached.split_names, cached.read, stream)


def _column_listing(features: datasets.Features) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in features.items())


def _pick(candidates: list[str], preferred: tuple[str, ...]) -> str | None:
    """The only candidate, else the first preferred name among them, else None (ambiguous or empty)."""
    if len(candidates) == 1:
        return candidates[0]
    return next((name for name in preferred if name in candidates), None)


def image_column(features: datasets.Features, requested: str | None) -> str:
    """The Image column of ``features``: ``requested`` (checked) or the only/preferred one."""
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


def label_column(features: datasets.Features, requested: str | None) -> str:
    """The label column of ``features`` (ClassLabel, else integer): ``requested`` (checked) or inferred."""
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


def _label_range(ds: datasets.Dataset, column: str) -> tuple[int | None, int | None]:
    """(smallest, largest) value of integer column ``column``; (None, None) for an empty dataset."""
    extremes = pc.min_max(ds.with_format("arrow")[column]).as_py()
    return extremes["min"], extremes["max"]


def shared_class_label(splits: Sequence[datasets.Dataset], column: str) -> datasets.ClassLabel:
    """The ClassLabel of ``column``: its own when it is one, else names "0".."K-1", K = 1 + largest label
    over ``splits`` (the splits loaded together, so they agree; at least one class)."""
    feature = splits[0].features[column]
    if isinstance(feature, datasets.ClassLabel):
        return feature
    largest = max((_label_range(ds, column)[1] for ds in splits), key=lambda m: -1 if m is None else m)
    return datasets.ClassLabel(names=[str(k) for k in range(max(largest or 0, 0) + 1)])


@dataclass(frozen=True)
class Columns:
    """Which original columns become ``image`` and ``label``, and the label's class list."""

    image: str
    label: str
    classes: datasets.ClassLabel


def find_columns(
    splits: Sequence[datasets.Dataset], image: str | None = None, label: str | None = None
) -> Columns:
    """Image/label columns of the first of ``splits`` (loaded together) and the classes they share."""
    features = splits[0].features
    image_col, label_col = image_column(features, image), label_column(features, label)
    if image_col == label_col:
        raise ValueError(f"data.image_column and data.label_column are both {image_col!r}")
    return Columns(image_col, label_col, shared_class_label(splits, label_col))


def standardise(ds: datasets.Dataset, columns: Columns) -> datasets.Dataset:
    """``ds`` reduced to the columns ``image`` (Image) and ``label`` (ClassLabel ``columns.classes``)."""
    ds = ds.select_columns([columns.image, columns.label])
    if not isinstance(ds.features[columns.label], datasets.ClassLabel):
        ds = ds.cast_column(columns.label, columns.classes)
    renames = {old: new for old, new in ((columns.image, "image"), (columns.label, "label")) if old != new}
    return ds.rename_columns(renames) if renames else ds


def check_labels(ds: datasets.Dataset, column: str, split: str, source: str) -> datasets.Dataset:
    """``ds`` (standardised, non-empty) unchanged, or a ValueError naming the split and column when some
    labels are missing (-1) or outside the class range 0..K-1 — before any training step."""
    num_classes = ds.features["label"].num_classes
    smallest, largest = _label_range(ds, "label")
    if smallest == -1:
        missing = int(pc.sum(pc.equal(ds.with_format("arrow")["label"], -1)).as_py())
        raise ValueError(
            f"Split {split!r} of {source!r} has {missing} of {len(ds)} samples without a label (-1) in "
            f"column {column!r}; it cannot be used for training or evaluation. Choose a labelled split "
            "(data.train_split / data.eval_split)."
        )
    if smallest < 0 or largest >= num_classes:
        raise ValueError(
            f"Column {column!r} of split {split!r} of {source!r} holds labels from {smallest} to {largest}, "
            f"outside the {num_classes} classes 0..{num_classes - 1} its ClassLabel declares; fix the data "
            "or choose another column (data.label_column)"
        )
    return ds


def require_rows(ds: datasets.Dataset, split: str, source: str) -> datasets.Dataset:
    """``ds`` unchanged, or a ValueError when it has no rows (an empty split or slice)."""
    if len(ds) == 0:
        raise ValueError(
            f"Split {split!r} of {source!r} has no samples; choose a non-empty split or slice "
            "(data.train_split / data.eval_split)"
        )
    return ds


def labelled_splits(
    src: SplitSource,
    specs: Sequence[str],
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> list[tuple[str, datasets.Dataset]]:
    """[(split spec as resolved, dataset with ``image``/``label``)] for each of ``specs`` (``"train[:10%]"``).

    The splits share one class list; each is checked to be non-empty and fully, validly labelled.
    """
    parsed = [parse_split(spec) for spec in specs]
    names = [(resolve_split(src.split_names, base, src.source), cut) for base, cut in parsed]
    columns = find_columns([src.read(name) for name, _ in names], image_column, label_column)
    out = []
    for name, cut in names:
        ds = require_rows(take_slice(standardise(src.read(name), columns), name, cut), name + cut, src.source)
        out.append((name + cut, check_labels(ds, columns.label, name + cut, src.source)))
    return out


def is_labelled(ds: datasets.Dataset, label: str | None = None) -> bool:
    """Whether a raw split has a label column without missing (negative) labels."""
    try:
        smallest, _ = _label_range(ds, label_column(ds.features, label))
    except ValueError:
        return False
    return smallest is None or smallest >= 0


def default_eval_split(src: SplitSource, label: str | None = None) -> str:
    """The first labelled split among validation/valid/…/test (reading only those it inspects)."""
    for name in EVAL_SPLIT_CANDIDATES:
        if name in src.split_names and is_labelled(src.read(name), label):
            return name
    raise ValueError(
        f"No labelled evaluation split in {src.source!r} (looked for {list(EVAL_SPLIT_CANDIDATES)}); "
        f"available splits: {sorted(src.split_names)}. Set data.eval_split."
    )


def open_config_source(cfg: DataConfig) -> SplitSource:
    """:func:`open_source` with the source, configuration, revision and cache of ``cfg``."""
    return open_source(cfg.source, name=cfg.name, revision=cfg.revision, cache_dir=cfg.cache_dir)


def select_splits(cfg: DataConfig, *, train: bool = True) -> list[tuple[str, datasets.Dataset]]:
    """[(train split, dataset), (eval split, dataset)] of ``cfg`` (only the eval pair when not ``train``).

    The eval split is ``cfg.eval_split`` or the first labelled one of validation/…/test. Only these
    splits are read (Hub datasets: downloaded). With ``cfg.streaming`` the training split is not read
    here (see :func:`stream_train_split`).
    """
    src = open_config_source(cfg)
    eval_spec = cfg.eval_split or default_eval_split(src, cfg.label_column)
    specs = [cfg.train_split, eval_spec] if train else [eval_spec]
    return labelled_splits(src, specs, image_column=cfg.image_column, label_column=cfg.label_column)


def load_splits(
    source: str,
    splits: Sequence[str],
    *,
    name: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, datasets.Dataset]:
    """{spec: dataset} for split specs ``splits`` of ``source``, sharing one class list (see :func:`load_dataset`)."""
    src = open_source(source, name=name, revision=revision, cache_dir=cache_dir)
    loaded = labelled_splits(src, splits, image_column=image_column, label_column=label_column)
    return {spec: ds for spec, (_, ds) in zip(splits, loaded, strict=True)}


def load_dataset(
    source: str,
    split: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Split ``split`` of ``source`` with exactly the columns ``image`` (Image) and ``label`` (ClassLabel).

    ``split`` may carry a slice (``"train[:10%]"``); ``name``/``revision`` select a Hub dataset's
    configuration and revision. Only that split is read (or downloaded). Raises ValueError for an
    unknown split (listing the available ones), undecidable or wrong columns (listing them), an empty
    split, missing or out-of-range labels; :class:`~vitkd.data.hub_datasets.DatasetUnavailableError`
    when a Hub dataset can be neither downloaded nor found in the cache.
    """
    return load_splits(
        source,
        [split],
        name=name,
        revision=revision,
        image_column=image_column,
        label_column=label_column,
        cache_dir=cache_dir,
    )[split]


class ImageReadError(ValueError):
    """An image of a dataset cannot be decoded; the message names the source, split, row and file."""


def _image_file(ds: datasets.Dataset, row: int) -> str:
    """Where row ``row``'s image came from (its recorded path), read without decoding it."""
    value = ds.with_format("arrow").select_columns(["image"])[row]["image"][0].as_py()
    return repr(value.get("path")) if value and value.get("path") else "bytes embedded in the dataset"


class NamedRows:
    """Map-style dataset ``inner`` whose image decoding errors name the source, split, row and file.

    Decoding happens inside 🤗 datasets when a row is read (in a DataLoader worker, mid-training), where
    PIL's own message ("image file is truncated") names nothing; this re-raises it as
    :class:`ImageReadError`. ``inner`` is a standardised 🤗 dataset (with any transform) or a wrapper
    over one, ``rows``, whose items are looked up by keys that are row numbers or carry one as
    ``.index``; rows are positions in ``rows`` (after any slice or subset).
    """

    def __init__(self, inner, split: str, source: str, *, rows: datasets.Dataset | None = None) -> None:
        self.inner, self.split, self.source = inner, split, source
        self.rows = inner if rows is None else rows

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key) -> dict:
        try:
            return self.inner[key]
        except IMAGE_DECODE_ERRORS as exc:
            raise self._error(getattr(key, "index", key), exc) from exc

    def __getitems__(self, keys: list) -> list[dict]:
        """Batched read (DataLoader uses it when present); on failure, the first failing row is named."""
        try:
            return self.inner.__getitems__(keys)
        except IMAGE_DECODE_ERRORS:
            return [self[key] for key in keys]

    def _error(self, row: int, exc: BaseException) -> ImageReadError:
        return ImageReadError(
            f"Cannot decode the image of row {row} of split {self.split!r} of {self.source!r} "
            f"(file: {_image_file(self.rows, row)}): {type(exc).__name__}: {exc}. Repair or remove that "
            "file, or exclude it with a split slice (data.train_split / data.eval_split)."
        )


# Examples held by the shuffle buffer of a streamed training split (datasets' own default is 1 000).
STREAM_SHUFFLE_BUFFER = 10_000


def stream_train_split(
    cfg: DataConfig, classes: datasets.ClassLabel, *, rank: int, world_size: int, seed: int
) -> tuple[datasets.IterableDataset, int]:
    """(this process's share of ``cfg.train_split`` streamed, the number of rows of the whole split).

    Rows ``{"image": undecoded, "label": int}``, sliced (absolute slices only), split between processes
    with ``datasets.distributed.split_dataset_by_node`` (whole shards per process when the shard count
    divides ``world_size``, else every ``world_size``-th row) and shuffled with a
    :data:`STREAM_SHUFFLE_BUFFER` buffer seeded by ``seed`` (call ``set_epoch`` for a new order each
    epoch). Images stay undecoded so the reader can name a damaged one. ``classes`` (the evaluation
    split's) must match a ClassLabel of the stream. The row count is the split's declared size (a Hub
    card's ``dataset_info``; in-memory splits know theirs) cut by the slice; a stream with neither
    raises ValueError asking for a slice.
    """
    src = open_config_source(cfg)
    base, cut = parse_split(cfg.train_split)
    name = resolve_split(src.split_names, base, src.source)
    start, stop = stream_rows(name, cut)
    stream = src.stream(name)
    if stream.features is None:
        raise ValueError(
            f"Split {name!r} of {cfg.source!r} does not declare its features when streamed; "
            "set data.streaming: false"
        )
    rows = _streamed_rows(stream, name, start, stop, cfg)
    image_col = image_column(stream.features, cfg.image_column)
    label_col = label_column(stream.features, cfg.label_column)
    declared = stream.features[label_col]
    if isinstance(declared, datasets.ClassLabel) and declared.names != classes.names:
        raise ValueError(
            f"Split {name!r} of {cfg.source!r} has classes {declared.names[:5]}… but the evaluation split "
            f"has {classes.names[:5]}…; use splits of one dataset configuration"
        )
    # Images as {"bytes", "path"} from the first step on (a later cast would decode, then re-encode):
    # decode_streamed decodes them and names a damaged one.
    stream = (
        stream.decode(False)
        .select_columns([image_col, label_col])
        .rename_columns({old: new for old, new in ((image_col, "image"), (label_col, "label")) if old != new})
    )
    stream = stream.skip(start) if start else stream
    stream = stream.take(stop - start) if stop is not None else stream
    stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER), rows


def _streamed_rows(stream: datasets.IterableDataset, name: str, start: int, stop: int | None, cfg: DataConfig) -> int:
    """Rows in ``[start, stop)`` of a streamed split: its declared size cut by the slice."""
    splits = stream.info.splits or {}
    declared = splits[name].num_examples if name in splits and splits[name].num_examples else None
    if declared is None and stop is None:
        raise ValueError(
            f"data.streaming: split {name!r} of {cfg.source!r} does not declare its size (no dataset_info in "
            "its card), and a streamed epoch needs one: give the rows to use as a slice, e.g. "
            f"data.train_split: '{name}[:1281167]'"
        )
    end = stop if declared is None else declared if stop is None else min(stop, declared)
    if end <= start:
        raise ValueError(f"data.train_split {cfg.train_split!r} selects no rows of the {declared} in split {name!r}")
    return end - start


def decode_streamed(row: dict, num_classes: int, *, position: int, where: str) -> tuple:
    """(PIL image, label) of a streamed row, or an error naming the stream position, file and split
    (``where``) for an undecodable image or a label outside 0..``num_classes``-1."""
    label = row["label"]
    if not 0 <= label < num_classes:
        raise ValueError(
            f"Row {position} of the stream of {where} has label {label}, outside the {num_classes} classes "
            f"0..{num_classes - 1} of the evaluation split; fix the data or choose data.label_column"
        )
    try:
        return datasets.Image().decode_example(row["image"]), label
    except IMAGE_DECODE_ERRORS as exc:
        raise ImageReadError(
            f"Cannot decode the image of row {position} of the stream of {where} "
            f"(file: {row['image'].get('path')!r}): {type(exc).__name__}: {exc}"
        ) from exc
