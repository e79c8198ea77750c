"""Hugging Face Hub model cards (``README.md``) for distilled students.

A card is rendered from one training run folder, or from a seed group (several runs of one recipe that
differ only in ``train.seed``; metrics then read mean ± std). A run folder holds ``recipe.yaml``,
``run_info.json``, ``summary.json`` and the exports ``student/`` (last epoch) and ``student_best/``.
Units: ``top1``, ``top5`` and ``ece`` in summary.json are percentages (as ``vitkd.engine.metrics`` writes).
The YAML front matter is built with ``huggingface_hub.ModelCardData`` so the Hub parses it as its own.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import yaml
from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.models import get_pretrained_cfg, model_entrypoint

RUN_FILES = ("recipe.yaml", "run_info.json", "summary.json")
_EXPORT_FOR_REPORT = {"best": "student_best", "last": "student"}
# Recipe fields that must agree across a seed group (everything that defines the experiment but the seed).
_GROUP_FIELDS = (
    "teacher",
    "student.name",
    "distill.method",
    "distill.kwargs",
    "distill.ce_weight",
    "data.source",
    "train.epochs",
    "train.batch_size",
)
_DEFAULT_LICENSE = "apache-2.0"  # vitkd's own licence; a recipe overrides it with hub.license


@dataclass(frozen=True)
class RunRecord:
    """The parsed files of one training run folder."""

    path: Path
    recipe: dict
    run_info: dict
    summary: dict

    @property
    def report(self) -> str:
        """Which epoch the run reports: ``'best'`` or ``'last'``."""
        return self.summary["report"]

    @property
    def metrics(self) -> dict:
        """The reported epoch's metrics: epoch, top1 (%), top5 (%), nll (nats), ece (%)."""
        return self.summary[self.report]

    @property
    def export_dir(self) -> Path:
        """The exported student matching the reported epoch."""
        return self.path / _EXPORT_FOR_REPORT[self.report]


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder; a missing file or an unknown ``report`` value raises, naming it."""
    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Run folder {run_dir} lacks {', '.join(missing)} (written by the training engine)."
        )
    run = RunRecord(
        path=run_dir,
        recipe=yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")),
        run_info=json.loads((run_dir / "run_info.json").read_text(encoding="utf-8")),
        summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")),
    )
    if run.summary.get("report") not in _EXPORT_FOR_REPORT:
        raise ValueError(
            f"{run_dir / 'summary.json'}: 'report' must be 'best' or 'last', "
            f"got {run.summary.get('report')!r}."
        )
    if not isinstance(run.summary.get(run.report), Mapping):
        raise ValueError(
            f"{run_dir / 'summary.json'} reports {run.report!r} but has no {run.report!r} metrics."
        )
    return run


def read_export_config(export_dir: str | Path) -> dict:
    """timm's ``config.json`` of an export folder."""
    config_path = Path(export_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} is missing; export the student with vitkd.export.export_student."
        )
    return json.loads(config_path.read_text(encoding="utf-8"))


def needs_vitkd(architecture: str) -> bool:
    """Whether loading ``architecture`` needs ``import vitkd`` (vitkd registers it with timm), not timm alone.

    Decided from timm's registry: the module that defines the architecture's entrypoint.
    """
    if not timm.is_model(architecture):
        raise ValueError(
            f"Architecture {architecture!r} is registered neither by timm nor by vitkd.models, "
            "so nobody could load this export."
        )
    return model_entrypoint(architecture).__module__.split(".")[0] == "vitkd"


def render_model_card(run_dirs: Sequence[str | Path], *, repo_id: str | None = None) -> str:
    """README.md (YAML front matter + Markdown) for one run or a seed group of runs.

    Args:
        run_dirs: run folders of the same recipe (differing only in ``train.seed``); the card describes
            the reported export of the first one as the repository's weights.
        repo_id: ``owner/name`` used in the loading snippet; defaults to the recipe's ``hub.repo_id``.
    """
    if not run_dirs:
        raise ValueError("render_model_card needs at least one run folder.")
    runs = [read_run(d) for d in run_dirs]
    _check_seed_group(runs)
    recipe = runs[0].recipe
    config = read_export_config(runs[0].export_dir)
    repo_id = repo_id or _lookup(recipe, "hub.repo_id")
    sections = [
        _title(runs, config),
        _results_section(runs),
        _training_section(runs),
        _usage_section(config["architecture"], repo_id),
        _reproduce_section(runs),
        _versions_section(runs[0].run_info),
    ]
    return _assemble(_run_card_data(runs, config, repo_id), sections)


def render_export_card(export_dir: str | Path, *, repo_id: str | None = None) -> str:
    """README.md for a bare export folder (no run to describe): architecture, preprocessing, usage."""
    config = read_export_config(export_dir)
    cfg = config["pretrained_cfg"]
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "vitkd"],
    )
    details = "\n".join(
        [
            f"# {_model_name(repo_id, config['architecture'])}",
            "",
            f"A `{config['architecture']}` image classifier with {config['num_classes']} classes, "
            "exported with vitkd.",
            "",
            f"- Input size (C, H, W): {tuple(cfg['input_size'])}",
            f"- Normalisation: mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}",
            f"- Evaluation crop: crop_pct {cfg.get('crop_pct')}, interpolation {cfg.get('interpolation')}",
        ]
    )
    return _assemble(card_data, [details, _usage_section(config["architecture"], repo_id)])


def _assemble(card_data: ModelCardData, sections: Sequence[str]) -> str:
    body = "\n\n".join(sections)
    return f"---\n{card_data.to_yaml()}\n---\n\n{body}\n"


def _lookup(mapping: Mapping, dotted: str, default: Any = None) -> Any:
    """``mapping['a']['b']`` for ``'a.b'``, or ``default`` when any level is absent."""
    value: Any = mapping
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return value


def _check_seed_group(runs: Sequence[RunRecord]) -> None:
    """All runs must share the recipe's defining fields and the reported epoch; seeds must differ."""
    first = runs[0]
    for run in runs[1:]:
        for field in _GROUP_FIELDS:
            if _lookup(run.recipe, field) != _lookup(first.recipe, field):
                raise ValueError(
                    f"Runs {first.path} and {run.path} differ in recipe field {field!r}; "
                    "a seed group must share everything but train.seed."
                )
        if run.report != first.report:
            raise ValueError(f"Runs {first.path} and {run.path} report different epochs (best vs last).")
    seeds = _seeds(runs)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"A seed group needs distinct train.seed values, got {seeds}.")


def _seeds(runs: Sequence[RunRecord]) -> list:
    return [_lookup(run.recipe, "train.seed") for run in runs]


def _metric(runs: Sequence[RunRecord], key: str) -> list[float]:
    """The reported epoch's ``key`` of every run; a missing key raises, naming the file."""
    values = []
    for run in runs:
        if key not in run.metrics:
            raise ValueError(f"{run.path / 'summary.json'}: the {run.report!r} entry has no {key!r}.")
        values.append(float(run.metrics[key]))
    return values


def _mean_std(values: Sequence[float], digits: int) -> str:
    """``'m'`` for one value, ``'m ± s'`` (sample std, n − 1) for several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _teachers(recipe: Mapping) -> list[Mapping]:
    """The recipe's teachers as a list of ``{name, checkpoint}`` mappings (empty when there is none)."""
    teacher = recipe.get("teacher")
    if teacher is None:
        return []
    return list(teacher) if isinstance(teacher, list) else [teacher]


def _teacher_hub_id(teacher: Mapping) -> str | None:
    """The Hub model id the teacher's weights came from; None for local checkpoints.

    ``checkpoint: hf-hub:<id>[@rev]`` (or such a name) gives ``<id>``; ``checkpoint: timm`` gives the Hub id
    of timm's pretrained weights for the name (``resnet34.tv_in1k`` -> ``timm/resnet34.tv_in1k``).
    """
    name, checkpoint = teacher["name"], teacher.get("checkpoint")
    for source in (checkpoint, name):
        if isinstance(source, str) and source.startswith("hf-hub:"):
            return source.removeprefix("hf-hub:").split("@")[0]
    if checkpoint == "timm" and timm.is_model(name):
        pretrained_cfg = get_pretrained_cfg(name)
        return pretrained_cfg.hf_hub_id if pretrained_cfg else None
    return None


def _dataset_hub_id(source: str) -> str | None:
    """``source`` when it names a Hub dataset (``owner/name`` and not a local path), else None."""
    if source.count("/") != 1 or source.startswith((".", "/", "~")) or Path(source).exists():
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


def _model_name(repo_id: str | None, architecture: str) -> str:
    return repo_id.split("/")[-1] if repo_id else architecture


def _run_card_data(runs: Sequence[RunRecord], config: Mapping, repo_id: str | None) -> ModelCardData:
    recipe = runs[0].recipe
    method = _lookup(recipe, "distill.method")
    source = _lookup(recipe, "data.source")
    dataset_id = _dataset_hub_id(source) if source else None
    base_models = [hub_id for t in _teachers(recipe) if (hub_id := _teacher_hub_id(t))]
    eval_results = None
    if dataset_id:
        shared = dict(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_id)
        eval_results = [
            EvalResult(
                **shared,
                metric_type="accuracy",
                metric_name="Top-1 accuracy (%)",
                metric_value=round(statistics.mean(_metric(runs, "top1")), 2),
            ),
            EvalResult(
                **shared,
                metric_type="top_5_accuracy",
                metric_name="Top-5 accuracy (%)",
                metric_value=round(statistics.mean(_metric(runs, "top5")), 2),
            ),
        ]
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=_lookup(recipe, "hub.license", _DEFAULT_LICENSE),
        tags=["image-classification", "timm", "knowledge-distillation", "vitkd", method],
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy"],
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=_model_name(repo_id, config["architecture"]),
        eval_results=eval_results,
    )


def _teacher_text(recipe: Mapping) -> str:
    teachers = _teachers(recipe)
    if not teachers:
        return "no teacher"
    return " + ".join(f"`{t['name']}`" for t in teachers)


def _title(runs: Sequence[RunRecord], config: Mapping) -> str:
    recipe = runs[0].recipe
    student = _lookup(recipe, "student.name")
    method = _lookup(recipe, "distill.method")
    architecture = config["architecture"]
    stored_as = "" if architecture == student else f" Stored as timm's `{architecture}` plus `model_args`."
    return (
        f"# {_teacher_text(recipe)} → `{student}` ({method})\n\n"
        f"A `{student}` student distilled from {_teacher_text(recipe)} with **{method}** using vitkd, "
        f"on `{_lookup(recipe, 'data.source')}` ({config['num_classes']} classes).{stored_as}"
    )


def _results_section(runs: Sequence[RunRecord]) -> str:
    report = runs[0].report
    top1 = _metric(runs, "top1")
    rows = [
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy (%) | {_mean_std(top1, 2)} |",
        f"| top-5 accuracy (%) | {_mean_std(_metric(runs, 'top5'), 2)} |",
        f"| expected calibration error (%) | {_mean_std(_metric(runs, 'ece'), 2)} |",
    ]
    teacher_top1 = _lookup(runs[0].summary, "teacher.top1")
    if teacher_top1 is not None:
        rows.append(f"| teacher top-1 accuracy (%) | {teacher_top1:.2f} |")
    published = _lookup(runs[0].recipe, "paper.published_top1")
    if published is not None:
        paper = ", ".join(
            str(p)
            for p in (_lookup(runs[0].recipe, "paper.table"), _lookup(runs[0].recipe, "paper.row"))
            if p is not None
        )
        rows.append(
            f"| published top-1 (%) ({paper}) | {published:.2f} (this model: "
            f"{statistics.mean(top1) - published:+.2f}) |"
        )
    epochs = ", ".join(str(run.metrics.get("epoch")) for run in runs)
    if len(runs) == 1:
        provenance = f"Metrics of the {report} epoch (epoch {epochs}), seed {_seeds(runs)[0]}."
    else:
        provenance = (
            f"Mean ± sample standard deviation over {len(runs)} seeds ({_seeds(runs)}), "
            f"each at its {report} epoch (epochs {epochs}). "
            f"The weights in this repository are those of the seed-{_seeds(runs)[0]} run."
        )
    return "## Results\n\n" + "\n".join(rows) + f"\n\n{provenance}"


def _training_section(runs: Sequence[RunRecord]) -> str:
    recipe, run_info = runs[0].recipe, runs[0].run_info
    hardware = run_info.get("hardware", {})
    kwargs = _lookup(recipe, "distill.kwargs") or {}
    teacher_lines = [
        f"- Teacher: `{t['name']}`" + (f" (weights: `{t['checkpoint']}`)" if t.get("checkpoint") else "")
        for t in _teachers(recipe)
    ] or ["- Teacher: none"]
    hashes = run_info.get("teacher_sha256") or {}  # {teacher name: SHA-256 of its local checkpoint or None}
    teacher_lines += [f"- SHA-256 of `{name}`'s checkpoint: `{sha}`" for name, sha in hashes.items() if sha]
    lines = [
        "## Distillation",
        "",
        *teacher_lines,
        f"- Student: `{_lookup(recipe, 'student.name')}`",
        f"- Method: `{_lookup(recipe, 'distill.method')}`, CE weight {_lookup(recipe, 'distill.ce_weight')}",
        *(f"  - `{key}`: {value}" for key, value in kwargs.items()),
        f"- Dataset: `{_lookup(recipe, 'data.source')}`",
        f"- Epochs: {_lookup(recipe, 'train.epochs')}, batch size {_lookup(recipe, 'train.batch_size')}",
        f"- Hardware: {hardware.get('num_processes')} × {hardware.get('device')}, per-device batch "
        f"{hardware.get('per_device_batch')}, global batch {hardware.get('global_batch')}, "
        f"mixed precision {hardware.get('mixed_precision')}",
    ]
    return "\n".join(lines)


def _usage_section(architecture: str, repo_id: str | None) -> str:
    imports = ["import timm"]
    if needs_vitkd(architecture):
        imports.append(f"import vitkd  # registers `{architecture}` with timm")
    code = "\n".join(
        [
            *imports,
            "",
            f'model = timm.create_model("hf-hub:{repo_id or "<owner>/<name>"}", pretrained=True).eval()',
            "data_config = timm.data.resolve_model_data_config(model)",
            "transform = timm.data.create_transform(**data_config, is_training=False)",
        ]
    )
    return f"## How to use\n\n```python\n{code}\n```"


def _reproduce_section(runs: Sequence[RunRecord]) -> str:
    commands = list(dict.fromkeys(run.run_info["command"] for run in runs))  # distinct, in run order
    recipe_yaml = yaml.safe_dump(runs[0].recipe, sort_keys=False).rstrip()
    note = "" if len(runs) == 1 else f" (of the first run; the others differ in `train.seed`: {_seeds(runs)})"
    return (
        "## Reproduce\n\n```bash\n" + "\n".join(commands) + "\n```\n\n"
        f"Resolved recipe{note}:\n\n```yaml\n{recipe_yaml}\n```"
    )


def _versions_section(run_info: Mapping) -> str:
    rows = "\n".join(f"| {name} | {version} |" for name, version in run_info.get("versions", {}).items())
    return f"## Package versions\n\n| package | version |\n|---|---|\n{rows}"
