"""Hugging Face Hub model cards (``README.md``) for distilled students.

A consumer of :mod:`vitkd.run_folder`: a card describes one run, or a seed group (runs that
:func:`vitkd.results.aggregate` puts in one row, i.e. the same experiment; metrics then read
mean ± std), from their :class:`~vitkd.run_folder.RunRecord` s and the export's timm ``config.json``.
Metrics are percentages (top1, top5, ece). The card is a ``huggingface_hub.ModelCard`` built from
``ModelCardData`` (front matter the Hub parses as its own) and a Jinja template of the sections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.models import get_pretrained_cfg, model_entrypoint

from vitkd.export import read_export_config
from vitkd.recipe import ModelConfig, Recipe, recipe_to_dict
from vitkd.results import ResultRow, aggregate, format_mean_std, format_signed
from vitkd.run_folder import RunRecord

__all__ = ["needs_vitkd", "render_export_card", "render_model_card"]

_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ sections | join('\n\n') }}\n"


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


def render_model_card(runs: Sequence[RunRecord], *, repo_id: str | None = None) -> str:
    """README.md (YAML front matter + Markdown) for one run or a seed group of runs.

    Args:
        runs: finished runs of one experiment (equal settings up to the seed, distinct seeds); the card
            describes the reported export of the first one as the repository's weights.
        repo_id: ``owner/name`` used in the loading snippet; defaults to the recipe's ``hub.repo_id``.
    """
    row = _seed_group_row(runs)
    recipe = runs[0].recipe
    config = read_export_config(runs[0].export_dir)
    repo_id = repo_id or recipe.hub.repo_id
    sections = [
        _title(recipe, config),
        _results_section(runs, row),
        _training_section(runs[0]),
        _usage_section(config["architecture"], repo_id),
        _reproduce_section(runs),
        _versions_section(runs[0].run_info),
    ]
    return _render(_run_card_data(recipe, row, config, repo_id), sections)


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
            _preprocessing(cfg),
        ]
    )
    return _render(card_data, [details, _usage_section(config["architecture"], repo_id)])


def _render(card_data: ModelCardData, sections: Sequence[str]) -> str:
    return str(ModelCard.from_template(card_data, template_str=_TEMPLATE, sections=sections))


def _preprocessing(cfg: Mapping) -> str:
    """The evaluation data config recorded in the export (timm's ``pretrained_cfg`` keys)."""
    return "\n".join(
        [
            f"- Input size (C, H, W): {tuple(cfg['input_size'])}",
            f"- Normalisation: mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}",
            f"- Evaluation resize and crop: crop_pct {cfg.get('crop_pct')}, crop_mode {cfg.get('crop_mode')}, "
            f"interpolation {cfg.get('interpolation')}",
        ]
    )


def _seed_group_row(runs: Sequence[RunRecord]) -> ResultRow:
    """The one aggregated row of ``runs``; refused unless they are one experiment with distinct seeds."""
    if not runs:
        raise ValueError("render_model_card needs at least one run.")
    rows = aggregate(runs)
    if len(rows) > 1:
        differing = "; ".join(row.variant or f"{row.method} on {row.dataset}" for row in rows)
        raise ValueError(
            f"Runs {[str(r.path) for r in runs]} are not one experiment (they differ in {differing}); "
            "a seed group must share every setting but train.seed."
        )
    seeds = [run.seed for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"A seed group needs distinct train.seed values, got {seeds}.")
    return rows[0]


def _teacher_hub_id(teacher: ModelConfig) -> str | None:
    """The Hub model id the teacher's weights came from; None for local checkpoints.

    ``checkpoint: hf-hub:<id>[@rev]`` (or such a name) gives ``<id>``; ``checkpoint: timm`` gives the Hub id
    of timm's pretrained weights for the name (``resnet34.tv_in1k`` -> ``timm/resnet34.tv_in1k``).
    """
    for source in (teacher.checkpoint, teacher.name):
        if isinstance(source, str) and source.startswith("hf-hub:"):
            return source.removeprefix("hf-hub:").split("@")[0]
    if teacher.checkpoint == "timm" and timm.is_model(teacher.name):
        pretrained_cfg = get_pretrained_cfg(teacher.name)
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


def _run_card_data(recipe: Recipe, row: ResultRow, config: Mapping, repo_id: str | None) -> ModelCardData:
    dataset_id = _dataset_hub_id(recipe.data.source)
    base_models = [hub_id for t in recipe.teachers if (hub_id := _teacher_hub_id(t))]
    eval_results = None
    if dataset_id:
        shared = dict(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_id)
        values = {"accuracy": ("Top-1 accuracy (%)", row.top1_mean),
                  "top_5_accuracy": ("Top-5 accuracy (%)", row.top5_mean)}
        eval_results = [
            EvalResult(**shared, metric_type=kind, metric_name=name, metric_value=round(value, 2))
            for kind, (name, value) in values.items()
            if value is not None
        ]
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=recipe.hub.license,
        tags=["image-classification", "timm", "knowledge-distillation", "vitkd", recipe.distill.method],
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy"],
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        model_name=_model_name(repo_id, config["architecture"]),
        eval_results=eval_results,
    )


def _teacher_text(recipe: Recipe) -> str:
    return " + ".join(f"`{t.name}`" for t in recipe.teachers) or "no teacher"


def _title(recipe: Recipe, config: Mapping) -> str:
    student, method = recipe.student.name, recipe.distill.method
    architecture = config["architecture"]
    stored_as = "" if architecture == student else f" Stored as timm's `{architecture}` plus `model_args`."
    return (
        f"# {_teacher_text(recipe)} → `{student}` ({method})\n\n"
        f"A `{student}` student distilled from {_teacher_text(recipe)} with **{method}** using vitkd, "
        f"on `{recipe.data.source}` ({config['num_classes']} classes).{stored_as}\n\n"
        f"Evaluation preprocessing (from the export's `pretrained_cfg`):\n\n{_preprocessing(config['pretrained_cfg'])}"
    )


def _results_section(runs: Sequence[RunRecord], row: ResultRow) -> str:
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy (%) | {format_mean_std(row.top1_mean, row.top1_std)} |",
        f"| top-5 accuracy (%) | {format_mean_std(row.top5_mean, row.top5_std, empty='—')} |",
        f"| expected calibration error (%) | {format_mean_std(row.ece_mean, row.ece_std, empty='—')} |",
    ]
    if row.teacher_top1 is not None:
        lines.append(f"| teacher top-1 accuracy (%) | {row.teacher_top1:.2f} |")
    if row.published is not None:
        lines.append(
            f"| published top-1 (%) ({row.paper}) | {row.published:.2f} "
            f"(this model: {format_signed(row.diff_published)}) |"
        )
    seeds = [run.seed for run in runs]
    epochs = ", ".join(str(run.metrics.get("epoch")) for run in runs)
    if len(runs) == 1:
        provenance = f"Metrics of the {row.report} epoch (epoch {epochs}), seed {seeds[0]}."
    else:
        provenance = (
            f"Mean ± sample standard deviation over {len(runs)} seeds ({seeds}), "
            f"each at its {row.report} epoch (epochs {epochs}). "
            f"The weights in this repository are those of the seed-{seeds[0]} run."
        )
    return "## Results\n\n" + "\n".join(lines) + f"\n\n{provenance}"


def _training_section(run: RunRecord) -> str:
    recipe, run_info = run.recipe, run.run_info
    hardware = run_info.get("hardware", {})
    teacher_lines = [
        f"- Teacher: `{t.name}`" + (f" (weights: `{t.checkpoint}`)" if t.checkpoint else "")
        for t in recipe.teachers
    ] or ["- Teacher: none"]
    hashes = run_info.get("teacher_sha256") or {}  # {teacher name: SHA-256 of its local checkpoint or None}
    teacher_lines += [f"- SHA-256 of `{name}`'s checkpoint: `{sha}`" for name, sha in hashes.items() if sha]
    distill = recipe.distill
    lines = [
        "## Distillation",
        "",
        *teacher_lines,
        f"- Student: `{recipe.student.name}`",
        f"- Method: `{distill.method}`, CE weight {distill.ce_weight}, KD weight {distill.kd_weight}",
        *(f"  - `{key}`: {value}" for key, value in distill.kwargs.items()),
        f"- Dataset: `{recipe.data.source}`",
        f"- Epochs: {recipe.train.epochs}, batch size {recipe.train.batch_size}",
    ]
    if hardware:
        lines.append(
            f"- Hardware: {hardware.get('num_processes')} × {hardware.get('device')}, per-device batch "
            f"{hardware.get('per_device_batch')}, global batch {hardware.get('global_batch')}, "
            f"mixed precision {hardware.get('mixed_precision')}"
        )
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
    commands = list(dict.fromkeys(c for run in runs if (c := run.run_info.get("command"))))  # distinct, in order
    recipe_yaml = yaml.safe_dump(recipe_to_dict(runs[0].recipe), sort_keys=False).rstrip()
    seeds = [run.seed for run in runs]
    note = "" if len(runs) == 1 else f" (of the first run; the others differ in `train.seed`: {seeds})"
    command_block = "```bash\n" + "\n".join(commands) + "\n```\n\n" if commands else ""
    return f"## Reproduce\n\n{command_block}Resolved recipe{note}:\n\n```yaml\n{recipe_yaml}\n```"


def _versions_section(run_info: Mapping) -> str:
    rows = "\n".join(f"| {name} | {version} |" for name, version in run_info.get("versions", {}).items())
    return f"## Package versions\n\n| package | version |\n|---|---|\n{rows}"
