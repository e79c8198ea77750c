"""Results tables from finished runs, like the paper's Table 1 with one row per (pair, method).

A consumer of :mod:`vitkd.run_folder`: it takes :class:`~vitkd.run_folder.RunRecord` s (the reported
epoch's metrics and the typed recipe of each run) and does no IO. Runs are grouped by experiment
(:func:`vitkd.run_folder.experiment_settings`: equal settings up to the seed, folder and logging
cadence), so seeds are averaged while e.g. a temperature sweep gives one row per temperature, labelled
with the settings that tell the rows of one (dataset, teacher, student, method) apart. Each row reports
the mean ± sample standard deviation over seeds of top-1, top-5 and ECE (%) at each run's reported
epoch, the difference to KD trained under the same settings (the paper's Δ), and the published top-1
of the recipe's ``paper`` section beside ours.

    rows = aggregate([read_run(p) for p in find_runs(["runs/cifar100/*"])])
    print(to_markdown(rows))

Why ``statistics`` and not a pandas ``groupby``: a group needs its runs (recipe, folders, variant
label), not only numbers, and the means are over a handful of seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from vitkd.run_folder import RunRecord, matches

__all__ = [
    "CSV_FIELDS",
    "ResultRow",
    "aggregate",
    "format_mean_std",
    "format_signed",
    "mean_std",
    "to_csv",
    "to_markdown",
]

# Settings that may differ between a method and the KD run it is compared with (Δ vs KD).
_METHOD_SETTINGS = ("distill.", "paper.", "data.two_view")
# Method order within a teacher → student pair, as in the paper's tables: student alone, KD, ...,
# LumiNet last; methods not listed come in between, alphabetically.
_FIRST_METHODS = ("none", "kd")
_LAST_METHODS = ("luminet",)


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
    top5_mean: float | None
    top5_std: float | None
    ece_mean: float | None
    ece_std: float | None
    published: float | None
    teacher_top1: float | None
    runs: list[str] = field(default_factory=list)
    delta_kd: float | None = None

    @property
    def diff_published(self) -> float | None:
        return None if self.published is None else self.top1_mean - self.published


# ----------------------------------------------------------------------------- grouping


def aggregate(runs: Sequence[RunRecord]) -> list[ResultRow]:
    """One :class:`ResultRow` per experiment (runs with equal settings up to the seed), sorted by
    dataset, student (alone first), teacher, then method in the paper's order (KD, …, LumiNet)."""
    experiments: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        experiments.setdefault(_experiment_key(run.settings), []).append(run)
    groups = list(experiments.values())
    rows = [_row(group, _variant(group[0], groups)) for group in groups]
    kd_rows = [(row, group[0]) for row, group in zip(rows, groups, strict=True) if row.method == "kd"]
    for row, group in zip(rows, groups, strict=True):
        row.delta_kd = _delta_vs_kd(row, group[0], kd_rows)
    return sorted(rows, key=_sort_key)


def _experiment_key(settings: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" for k, v in sorted(settings.items()))


def _pair(run: RunRecord) -> tuple[str, str, str, str]:
    """(dataset, teacher label, student, method): the first level of grouping."""
    r = run.recipe
    teacher = " + ".join(t.name for t in r.teachers) or "—"
    return r.data.source, teacher, r.student.name, r.distill.method


def _variant(run: RunRecord, groups: Sequence[list[RunRecord]]) -> str:
    """The non-paper settings in which ``run``'s experiment differs from others of the same pair/method."""
    siblings = [g[0].settings for g in groups if _pair(g[0]) == _pair(run)]
    mine = run.settings
    keys = sorted(set().union(*siblings))
    differing = [k for k in keys if not k.startswith("paper.") and len({s.get(k) for s in siblings}) > 1]
    return ", ".join(f"{k}={mine.get(k, '—')}" for k in differing)


def _row(group: list[RunRecord], variant: str) -> ResultRow:
    first = group[0]
    dataset, teacher, student, method = _pair(first)
    teacher_top1 = [r.teacher_top1 for r in group if r.teacher_top1 is not None]
    top1_mean, top1_std = mean_std([r.metrics["top1"] for r in group])
    top5_mean, top5_std = _metric_mean_std(group, "top5")
    ece_mean, ece_std = _metric_mean_std(group, "ece")
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
        top1_mean=top1_mean,
        top1_std=top1_std,
        top5_mean=top5_mean,
        top5_std=top5_std,
        ece_mean=ece_mean,
        ece_std=ece_std,
        published=paper.published_top1,
        teacher_top1=statistics.fmean(teacher_top1) if teacher_top1 else None,
        runs=[str(r.path) for r in group],
    )


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n − 1); the std is None below two values, both for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _metric_mean_std(group: Sequence[RunRecord], key: str) -> tuple[float | None, float | None]:
    """:func:`mean_std` of ``key`` over the runs that recorded it (an older run may lack e.g. ``ece``)."""
    return mean_std([r.metrics[key] for r in group if key in r.metrics])


KDRows = Sequence[tuple[ResultRow, RunRecord]]


def _delta_vs_kd(row: ResultRow, run: RunRecord, kd_rows: KDRows) -> float | None:
    """Top-1 difference to the KD experiment of the same pair whose settings equal ``run``'s outside the
    method's own (``distill``, ``paper``, ``data.two_view``); None for KD itself, or without such a run."""
    if row.method in ("kd", "none"):
        return None
    for kd_row, kd_run in kd_rows:
        if _pair(kd_run)[:3] == _pair(run)[:3] and _context(kd_run) == _context(run):
            return row.top1_mean - kd_row.top1_mean
    return None


def _context(run: RunRecord) -> dict[str, str]:
    return {k: v for k, v in run.settings.items() if not matches(k, _METHOD_SETTINGS)}


def _sort_key(row: ResultRow) -> tuple:
    if row.method in _FIRST_METHODS:
        rank = _FIRST_METHODS.index(row.method)
    elif row.method in _LAST_METHODS:
        rank = len(_FIRST_METHODS) + 1 + _LAST_METHODS.index(row.method)
    else:
        rank = len(_FIRST_METHODS)
    alone_first = row.teacher != "—"  # a student trained alone heads the rows of that student's teachers
    return row.dataset, row.student, alone_first, row.teacher, rank, row.method, row.paper, row.variant


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
    "delta_kd", "published", "diff_published", "top5_mean", "top5_std", "ece_mean", "ece_std", "teacher_top1",
    "runs",
)


def to_csv(rows: Sequence[ResultRow]) -> str:
    """The rows as CSV text (numbers unrounded; empty cells for missing values; runs joined by ``;``)."""
    import pandas as pd  # only tables need it: keeps `import vitkd.results` light

    records = [{name: getattr(row, name) for name in CSV_FIELDS} | {"runs": ";".join(row.runs)} for row in rows]
    return pd.DataFrame.from_records(records, columns=list(CSV_FIELDS)).to_csv(index=False)
