"""The run folder: its layout, the writers the engine uses, the one reader, and experiment identity.

Layout of ``<run>/`` (``train.output_dir``)::

    recipe.yaml      the fully resolved recipe
    run_info.json    command, package versions, hardware, data, teacher checkpoint hashes
    metrics.jsonl    one JSON object per evaluation (epoch, step, lr, train_* losses, top1, ...)
    summary.json     {"report": "best"|"last"|"ema", "best": {...}, "last": {...}, ["ema": {...},] "teacher": {...}}
    checkpoints/     resumable states (step_<n>)
    student/         the last weights, exported (model.safetensors + timm config.json)
    student_best/    the best epoch's weights, exported
    student_ema/     the EMA student's last weights, exported (train.model_ema)

A run is *finished* once ``summary.json`` exists (written last). :func:`read_run` is the only reader of a
finished run; :func:`experiment_settings` is the only definition of which recipe keys make two runs the
same experiment (so that their seeds are averaged). Metrics are percentages (top1, top5, ece) and nats
(nll), as :mod:`vitkd.engine.metrics` writes them.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import platform
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from vitkd.recipe import Recipe, RecipeError, recipe_from_dict, recipe_to_dict

__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "RECIPE_FILE",
    "RUN_INFO_FILE",
    "STUDENT_BEST_DIR",
    "STUDENT_DIR",
    "STUDENT_EMA_DIR",
    "SUMMARY_FILE",
    "RunFolder",
    "RunRecord",
    "command_line",
    "experiment_settings",
    "file_sha256",
    "find_runs",
    "flatten",
    "is_finished",
    "matches",
    "package_versions",
    "read_run",
    "tracker_config",
]

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
RUN_INFO_FILE = "run_info.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
STUDENT_DIR = "student"
STUDENT_BEST_DIR = "student_best"
STUDENT_EMA_DIR = "student_ema"
RESUMES_FILE = "resumes.jsonl"
# what a finished or partly run experiment leaves (recipe.yaml/run_info.json alone: a start that failed)
RESULTS = (METRICS_FILE, SUMMARY_FILE, STUDENT_DIR, STUDENT_BEST_DIR, CHECKPOINTS_DIR)
EXPORT_FOR_REPORT = {"best": STUDENT_BEST_DIR, "last": STUDENT_DIR, "ema": STUDENT_EMA_DIR}

# Recipe keys that never change a run's result: two runs whose recipes differ only here are the same
# experiment (seeds of it). A pattern ending in "." covers a whole section.
NOT_THE_EXPERIMENT = (
    "name",
    "train.seed",
    "train.output_dir",
    "train.log_every",
    "train.log_with",
    "train.checkpoint_every",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.eval_batch_size",
    "train.cpu",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "data.cache_dir",
    "paper.notes",
    "hub.",
)

_PACKAGES = ("vitkd", "torch", "torchvision", "timm", "accelerate", "datasets", "safetensors", "einops")


# ----------------------------------------------------------------------------- layout and writers


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder and the writers the engine fills it with (main process only).

    JSON/YAML files are replaced atomically (written beside, then renamed), so a reader never sees half
    a file; ``metrics.jsonl`` is appended one line per evaluation.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    recipe_file = property(lambda self: self.path / RECIPE_FILE)
    run_info_file = property(lambda self: self.path / RUN_INFO_FILE)
    metrics_file = property(lambda self: self.path / METRICS_FILE)
    summary_file = property(lambda self: self.path / SUMMARY_FILE)
    checkpoints = property(lambda self: self.path / CHECKPOINTS_DIR)
    student = property(lambda self: self.path / STUDENT_DIR)
    student_best = property(lambda self: self.path / STUDENT_BEST_DIR)
    student_ema = property(lambda self: self.path / STUDENT_EMA_DIR)
    resumes_file = property(lambda self: self.path / RESUMES_FILE)

    @property
    def is_finished(self) -> bool:
        """Whether training completed (``summary.json`` is written last)."""
        return self.summary_file.is_file()

    def export_dir(self, report: str) -> Path:
        """The export a ``train.report`` value designates: ``student_best/``, ``student/`` or ``student_ema/``."""
        if report not in EXPORT_FOR_REPORT:
            raise ValueError(f"report must be one of {sorted(EXPORT_FOR_REPORT)}, got {report!r}")
        return self.path / EXPORT_FOR_REPORT[report]

    def write_recipe(self, recipe: Recipe) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.recipe_file, yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))

    def write_run_info(self, info: Mapping[str, Any]) -> None:
        _write_json(self.run_info_file, info)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        _write_json(self.summary_file, summary)

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` in file order (empty when there is none yet)."""
        if not self.metrics_file.is_file():
            return []
        lines = self.metrics_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def keep_metrics(self, count: int) -> int:
        """Keep the first ``count`` records of ``metrics.jsonl`` and drop the rest, and any line a kill cut
        short (a resumed run redoes the evaluations after its checkpoint). Returns how many were dropped;
        the file is replaced atomically."""
        if not self.metrics_file.is_file():
            return 0
        lines = [line for line in self.metrics_file.read_text().splitlines() if line.strip()]
        kept = [line for line in lines[:count] if _is_json(line)]
        if len(kept) != len(lines):
            _atomic_write(self.metrics_file, "".join(f"{line}\n" for line in kept))
        return len(lines) - len(kept)

    def read_saved_recipe(self) -> dict[str, Any] | None:
        """The run's resolved ``recipe.yaml`` as plain data (None before the run wrote it)."""
        if not self.recipe_file.is_file():
            return None
        return yaml.safe_load(self.recipe_file.read_text()) or {}

    def append_resume(self, record: Mapping[str, Any]) -> None:
        """One line per resume in ``resumes.jsonl``: when, from which checkpoint, what the recipe changed."""
        with self.resumes_file.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def results_present(self) -> list[str]:
        """Names of the non-empty results of an earlier run in this folder (metrics, exports, checkpoints)."""
        return [name for name in RESULTS if (self.path / name).exists() and not _is_empty(self.path / name)]


def is_finished(path: str | Path) -> bool:
    """Whether ``path`` is a finished run folder (it holds ``summary.json``)."""
    return RunFolder(path).is_finished


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _is_empty(path: Path) -> bool:
    return not any(path.iterdir()) if path.is_dir() else path.stat().st_size == 0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def package_versions() -> dict[str, str]:
    """Python's and the main packages' versions, for ``run_info.json``."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a checkpoint file, or of ``model.safetensors`` inside an export folder; None if not local."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def command_line() -> str:
    """The command that started this process, as recorded in ``run_info.json``."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


# ----------------------------------------------------------------------------- experiment identity


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b": leaf}``; lists (e.g. a teacher ensemble) and empty mappings are leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def tracker_config(recipe: Recipe) -> dict[str, int | float | str | bool]:
    """The recipe as ``{"section.key": scalar}`` for experiment trackers (non-scalars become text)."""
    scalar = (int, float, str, bool)
    return {k: v if isinstance(v, scalar) else str(v) for k, v in flatten(recipe_to_dict(recipe)).items()}


def experiment_settings(recipe: Recipe) -> dict[str, str]:
    """``{"section.key": JSON text}`` of every recipe key that can change the result.

    Two runs are the same experiment (seeds to average) exactly when these are equal: the seed, the
    folder, logging/checkpoint cadence, worker counts and the ``hub`` section are left out; learning
    rate, loss weights, data, models, schedule ... are in.
    """
    flat = flatten(recipe_to_dict(recipe))
    return {k: json.dumps(v, sort_keys=True) for k, v in flat.items() if not matches(k, NOT_THE_EXPERIMENT)}


def matches(key: str, patterns: Iterable[str]) -> bool:
    """``key`` equals a pattern, or lies below one ending in ``.``."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunRecord:
    """One finished run as its consumers (tables, model cards, hub push) need it.

    ``recipe`` is typed; keys an older schema had but the current one lacks are dropped (logged) and
    keys it lacks take the current defaults. ``metrics`` are the reported epoch's (``report``: the
    recipe's ``train.report``): ``epoch``, ``top1``/``top5``/``ece`` (%), ``nll`` (nats).
    ``teacher_top1`` (%) is the teacher's on the same evaluation set, when measured. ``run_info`` is
    ``run_info.json`` as written (empty when absent).
    """

    path: Path
    recipe: Recipe
    report: str
    metrics: dict[str, float]
    teacher_top1: float | None
    run_info: dict[str, Any]

    @property
    def export_dir(self) -> Path:
        """The exported student of the reported epoch."""
        return RunFolder(self.path).export_dir(self.report)

    @property
    def seed(self) -> int:
        return self.recipe.train.seed

    @cached_property
    def settings(self) -> dict[str, str]:
        """:func:`experiment_settings` of the recipe."""
        return experiment_settings(self.recipe)


def read_run(path: str | Path) -> RunRecord:
    """Read a finished run folder; errors name the folder and the missing or malformed file."""
    folder = RunFolder(path)
    summary = _read_file(folder.summary_file, json.loads)
    raw_recipe = _read_file(folder.recipe_file, yaml.safe_load)
    run_info = _read_file(folder.run_info_file, json.loads) if folder.run_info_file.is_file() else {}
    try:
        recipe = recipe_from_dict(_known_keys(Recipe, raw_recipe, "recipe", folder.recipe_file))
    except RecipeError as err:
        raise ValueError(f"{folder.recipe_file}: {err}") from err
    report = summary.get("report") if isinstance(summary, Mapping) else None
    if report not in EXPORT_FOR_REPORT:
        raise ValueError(f"{folder.summary_file}: 'report' must be one of {sorted(EXPORT_FOR_REPORT)}, got {report!r}")
    metrics = summary.get(report)
    if not isinstance(metrics, Mapping) or "top1" not in metrics:
        raise ValueError(f"{folder.summary_file}: it reports the {report!r} epoch but has no metrics for it")
    teacher = summary.get("teacher") or {}
    return RunRecord(folder.path, recipe, report, dict(metrics), teacher.get("top1"), run_info)


def _read_file(path: Path, parse: Any) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a finished vitkd run folder?")
    try:
        return parse(path.read_text())
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"{path} cannot be parsed: {err}") from err


def _known_keys(cls: Any, raw: Any, where: str, source: Path) -> Any:
    """``raw`` without the keys the recipe schema (dataclass ``cls``) does not know, recursively.

    Sections typed ``A | list[A]`` (the teacher) are pruned item by item; free-form mappings
    (``kwargs``) are kept whole.
    """
    if not isinstance(raw, Mapping):
        return raw
    hints = typing.get_type_hints(cls)
    kept = {}
    for key, value in raw.items():
        if key not in hints:
            logger.info("%s: ignoring %r, a key the current recipe schema does not have", source, f"{where}.{key}")
            continue
        section = [a for a in _leaf_types(hints[key]) if dataclasses.is_dataclass(a)]
        if section and isinstance(value, list):
            value = [_known_keys(section[0], item, f"{where}.{key}", source) for item in value]
        elif section:
            value = _known_keys(section[0], value, f"{where}.{key}", source)
        kept[key] = value
    return kept


def _leaf_types(hint: Any) -> list[Any]:
    """The types in a hint, looking through unions and ``list[...]``."""
    args = typing.get_args(hint)
    return [leaf for arg in args for leaf in _leaf_types(arg)] if args else [hint]


def find_runs(patterns: Iterable[str | Path]) -> list[Path]:
    """Finished run folders named by, or found below, ``patterns`` (folders or globs, ``**`` allowed).

    A folder that is not itself a finished run is searched recursively; unfinished runs (a
    ``recipe.yaml`` but no ``summary.json``) are skipped with a warning. Raises FileNotFoundError for a
    pattern that finds no finished run.
    """
    found: dict[Path, None] = {}  # ordered set
    for pattern in map(str, patterns):
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        runs = [run for match in matches if match.is_dir() for run in _runs_below(match)]
        if not runs:
            raise FileNotFoundError(
                f"no finished run folder (one with {SUMMARY_FILE}) matches or lies below {pattern!r}"
            )
        found.update(dict.fromkeys(runs))
    return list(found)


def _runs_below(folder: Path) -> list[Path]:
    if is_finished(folder):
        return [folder]
    for recipe_file in sorted(folder.rglob(RECIPE_FILE)):
        if not is_finished(recipe_file.parent):
            logger.warning("skipping %s: no %s yet (unfinished run)", recipe_file.parent, SUMMARY_FILE)
    return sorted(p.parent for p in folder.rglob(SUMMARY_FILE))
