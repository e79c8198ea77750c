"""Results tables from finished run folders, like the paper's Table 1 with one row per (pair, method).

A run folder (layout in :mod:`vitkd.engine.run_files`) holds the fully resolved ``recipe.yaml`` and a
``summary.json`` with the best and last epochs' metrics and which of them is the result
(``train.report``). Runs are grouped by experiment: first by (dataset, teacher(s), student, method),
then by every other setting that can change the result, so runs that differ only in ``train.seed``
(and their folder) are averaged, while e.g. a temperature sweep gives one row per temperature,
labelled with the settings that tell the rows apart. Each row reports the mean ± sample standard
deviation over seeds of the top-1 (%) and ECE (%) of each run's reported epoch, the difference to
KD trained under the same settings (the paper's Δ), and the published top-1 of the recipe's
``paper`` section beside ours.

    rows = aggregate([read_run(p) for p in find_run_dirs(["runs/cifar100/*"])])
    print(to_markdown(rows))
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from vitkd.recipe import Recipe, recipe_from_dict, recipe_to_dict

__all__ = [
    "ResultRow",
    "RunResult",
    "aggregate",
    "find_run_dirs",
    "read_run",
    "to_markdown",
    "write_csv",
]

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
RECIPE_FILE = "recipe.yaml"

# Settings that never change a run's result: left out when deciding which runs are the same experiment.
_NOT_THE_EXPERIMENT = (
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
# Settings that may differ between a method and the KD run it is compared with (Δ vs KD).
_METHOD_SETTINGS = ("distill.", "paper.", "data.two_view")
# Method order within a teacher → student pair, as in the paper's tables: student alone, KD, ...,
# LumiNet last; methods not listed come in between, alphabetically.
_FIRST_METHODS = ("none", "kd")
_LAST_METHODS = ("luminet",)


@dataclass(frozen=True)
class RunResult:
    """One finished run: its folder, resolved recipe and the metrics of the epoch its recipe reports.

    ``metrics`` holds ``top1``/``top5``/``ece`` (%), ``nll`` (nats) and ``epoch``; ``teacher_top1`` is
    the teacher's top-1 (%) on the same evaluation set, when the run measured it.
    """

    path: Path
    recipe: Recipe
    metrics: dict[str, float]
    teacher_top1: float | None = None

    @cached_property
    def settings(self) -> dict[str, str]:
        """The recipe flattened to ``{"section.key": JSON value}``, minus what cannot change the result."""
        flat = _flatten(recipe_to_dict(self.recipe))
        return {k: v for k, v in flat.items() if not _matches(k, _NOT_THE_EXPERIMENT)}


@dataclass
class ResultRow:
    """One experiment: the runs (seeds) of one configuration, aggregated.

    ``variant`` names the settings that set this row apart from other rows of the same
    (dataset, teacher, student, method); empty when there is no other. Means and standard deviations
    are over the ``n`` runs; ``*_std`` is None for a single run. ``delta_kd``: our top-1 minus that of
    the KD row trained under the same settings (None without one); ``diff_published``: ours minus
    ``published``.
    """

    dataset: str
    teacher: str
    student: str
    method: str
    variant: str
    paper: str
    report: str
    n: int
    top1_mean: float
    top1_std: float | None
    ece_mean: float | None
    ece_std: float | None
    published: float | None
    teacher_top1: float | None
    runs: list[str] = field(default_factory=list)
    delta_kd: float | None = None

    @property
    def diff_published(self) -> float | None:
        return None if self.published is None else self.top1_mean - self.published


# ----------------------------------------------------------------------------- reading run folders


def find_run_dirs(patterns: Iterable[str | Path]) -> list[Path]:
    """Finished run folders (those with a ``summary.json``) named by, or found below, ``patterns``.

    Each pattern is a folder or a glob (``runs/cifar100/*_kd``, ``runs/**/seed*``); a folder that is not
    itself a run is searched recursively. Folders with a ``recipe.yaml`` but no ``summary.json`` are
    unfinished runs: skipped with a warning. Raises FileNotFoundError for a pattern that finds no run.
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
    if (folder / SUMMARY_FILE).is_file():
        return [folder]
    for recipe_file in sorted(folder.rglob(RECIPE_FILE)):
        if not (recipe_file.parent / SUMMARY_FILE).is_file():
            logger.warning("skipping %s: no %s yet (unfinished run)", recipe_file.parent, SUMMARY_FILE)
    return sorted(p.parent for p in folder.rglob(SUMMARY_FILE))


def read_run(path: str | Path) -> RunResult:
    """Read one run folder; errors name the folder and the missing or malformed file."""
    path = Path(path)
    summary = _read_file(path / SUMMARY_FILE, json.loads)
    raw_recipe = _read_file(path / RECIPE_FILE, yaml.safe_load)
    recipe = recipe_from_dict(raw_recipe)
    report = summary.get("report")
    if report not in ("best", "last"):
        raise ValueError(f"{path / SUMMARY_FILE}: 'report' must be 'best' or 'last', got {report!r}")
    metrics = summary.get(report)
    if not isinstance(metrics, Mapping) or "top1" not in metrics:
        raise ValueError(f"{path / SUMMARY_FILE}: it reports the {report!r} epoch but has no metrics for it")
    teacher = summary.get("teacher") or {}
    return RunResult(path, recipe, dict(metrics), teacher.get("top1"))


def _read_file(path: Path, parse: Any) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a finished vitkd run folder?")
    try:
        return parse(path.read_text())
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"{path} cannot be parsed: {err}") from err


# ----------------------------------------------------------------------------- grouping


def aggregate(runs: Sequence[RunResult]) -> list[ResultRow]:
    """One :class:`ResultRow` per experiment (runs with equal settings up to the seed), sorted by
    dataset, student (alone first), teacher, then method in the paper's order (KD, …, LumiNet)."""
    experiments: dict[tuple[str, ...], list[RunResult]] = {}
    for run in runs:
        experiments.setdefault(_experiment_key(run.settings), []).append(run)
    groups = list(experiments.values())
    rows = [_row(group, _variant(group[0], groups)) for group in groups]
    kd_rows = [(row, group[0]) for row, group in zip(rows, groups, strict=True) if row.method == "kd"]
    for row, group in zip(rows, groups, strict=True):
        row.delta_kd = _delta_vs_kd(row, group[0], kd_rows)
    return sorted(rows, key=_sort_key)


def _experiment_key(settings: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" for k, v in sorted(settings.items()))


def _pair(run: RunResult) -> tuple[str, str, str, str]:
    """(dataset, teacher label, student, method): the first level of grouping."""
    r = run.recipe
    teacher = " + ".join(t.name for t in r.teachers) or "—"
    return r.data.source, teacher, r.student.name, r.distill.method


def _variant(run: RunResult, groups: Sequence[list[RunResult]]) -> str:
    """The non-paper settings in which ``run``'s experiment differs from others of the same pair/method."""
    siblings = [g[0].settings for g in groups if _pair(g[0]) == _pair(run)]
    mine = run.settings
    keys = sorted(set().union(*siblings))
    differing = [k for k in keys if not k.startswith("paper.") and len({s.get(k) for s in siblings}) > 1]
    return ", ".join(f"{k}={mine.get(k, '—')}" for k in differing)


def _row(group: list[RunResult], variant: str) -> ResultRow:
    first = group[0]
    dataset, teacher, student, method = _pair(first)
    top1 = [r.metrics["top1"] for r in group]
    ece = [r.metrics["ece"] for r in group if "ece" in r.metrics]
    teacher_top1 = [r.teacher_top1 for r in group if r.teacher_top1 is not None]
    paper = first.recipe.paper
    return ResultRow(
        dataset=dataset,
        teacher=teacher,
        student=student,
        method=method,
        variant=variant,
        paper=", ".join(p for p in (paper.table, paper.row) if p),
        report=first.recipe.train.report,
        n=len(group),
        top1_mean=statistics.fmean(top1),
        top1_std=_std(top1),
        ece_mean=statistics.fmean(ece) if ece else None,
        ece_std=_std(ece),
        published=paper.published_top1,
        teacher_top1=statistics.fmean(teacher_top1) if teacher_top1 else None,
        runs=[str(r.path) for r in group],
    )


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n − 1), None below two values."""
    return statistics.stdev(values) if len(values) > 1 else None


KDRows = Sequence[tuple[ResultRow, RunResult]]


def _delta_vs_kd(row: ResultRow, run: RunResult, kd_rows: KDRows) -> float | None:
    """Top-1 difference to the KD experiment of the same pair whose settings equal ``run``'s outside the
    method's own (``distill``, ``paper``, ``data.two_view``); None for KD itself, or without such a run."""
    if row.method in ("kd", "none"):
        return None
    for kd_row, kd_run in kd_rows:
        if _pair(kd_run)[:3] == _pair(run)[:3] and _context(kd_run) == _context(run):
            return row.top1_mean - kd_row.top1_mean
    return None


def _context(run: RunResult) -> dict[str, str]:
    return {k: v for k, v in run.settings.items() if not _matches(k, _METHOD_SETTINGS)}


def _sort_key(row: ResultRow) -> tuple:
    if row.method in _FIRST_METHODS:
        rank = _FIRST_METHODS.index(row.method)
    elif row.method in _LAST_METHODS:
        rank = len(_FIRST_METHODS) + 1 + _LAST_METHODS.index(row.method)
    else:
        rank = len(_FIRST_METHODS)
    alone_first = row.teacher != "—"  # a student trained alone heads the rows of that student's teachers
    return row.dataset, row.student, alone_first, row.teacher, rank, row.method, row.paper, row.variant


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b": JSON text}``; lists (e.g. a teacher ensemble) stay one value."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def _matches(key: str, patterns: Sequence[str]) -> bool:
    """``key`` equals a pattern, or lies below one ending in ``.``."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


# ----------------------------------------------------------------------------- rendering

_COLUMNS = (
    ("dataset", "Dataset"),
    ("pair", "Teacher → student"),
    ("method", "Method"),
    ("variant", "Variant"),
    ("paper", "Paper"),
    ("n", "n"),
    ("top1", "Top-1 (%)"),
    ("delta_kd", "Δ vs KD"),
    ("published", "Published"),
    ("diff_published", "Ours − published"),
    ("ece", "ECE (%)"),
    ("teacher_top1", "Teacher top-1"),
)


def to_markdown(rows: Sequence[ResultRow]) -> str:
    """A Markdown table, one line per row; columns that are empty in every row are left out."""
    cells = [_cells(row) for row in rows]
    keys = [k for k, _ in _COLUMNS if any(c[k] for c in cells)]
    titles = dict(_COLUMNS)
    lines = [
        "| " + " | ".join(titles[k] for k in keys) + " |",
        "|" + "|".join("---:" if k in _NUMERIC else "---" for k in keys) + "|",
    ]
    lines += ["| " + " | ".join(c[k] for k in keys) + " |" for c in cells]
    note = "Top-1 and ECE: mean ± sample std over n seeds, of each run's reported epoch (train.report)."
    return "\n".join(lines) + f"\n\n{note}\n"


_NUMERIC = {"n", "top1", "delta_kd", "published", "diff_published", "ece", "teacher_top1"}


def _cells(row: ResultRow) -> dict[str, str]:
    return {
        "dataset": row.dataset,
        "pair": f"{row.teacher} → {row.student}",
        "method": f"{row.method} ({row.report})" if row.report != "best" else row.method,
        "variant": row.variant,
        "paper": row.paper,
        "n": str(row.n),
        "top1": format_mean_std(row.top1_mean, row.top1_std),
        "delta_kd": format_signed(row.delta_kd),
        "published": "" if row.published is None else f"{row.published:.2f}",
        "diff_published": format_signed(row.diff_published),
        "ece": format_mean_std(row.ece_mean, row.ece_std),
        "teacher_top1": "" if row.teacher_top1 is None else f"{row.teacher_top1:.2f}",
    }


def format_mean_std(mean: float | None, std: float | None, empty: str = "") -> str:
    """``"79.48 ± 0.80"`` (or just the mean when there is no std; ``empty`` when there is no value)."""
    if mean is None:
        return empty
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def format_signed(value: float | None, empty: str = "") -> str:
    """``"+1.91"`` / ``"-0.98"``; ``empty`` when there is no value."""
    return empty if value is None else f"{value:+.2f}"


CSV_FIELDS = (
    "dataset", "teacher", "student", "method", "variant", "paper", "report", "n", "top1_mean", "top1_std",
    "delta_kd", "published", "diff_published", "ece_mean", "ece_std", "teacher_top1", "runs",
)


def write_csv(rows: Sequence[ResultRow], path: str | Path) -> None:
    """The rows as CSV (numbers unrounded; empty cells for missing values; runs joined by ``;``)."""
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            values = {name: getattr(row, name) for name in CSV_FIELDS}
            values["runs"] = ";".join(row.runs)
            writer.writerow({k: "" if v is None else v for k, v in values.items()})
