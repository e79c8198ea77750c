"""vitkd.model_card: Hub front matter + Markdown body rendered from run folders written by the engine."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import statistics

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from vitkd.model_card import needs_vitkd, render_export_card, render_model_card
from vitkd.recipe import ModelConfig
from vitkd.run_folder import read_run

REPO_ID = "alice/resnet8-kd"
TINY_VIT = ("student=vit_tiny_patch16_224",
            "student.kwargs={img_size: 16, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}")


def split_card(text: str) -> tuple[dict, str]:
    """(front matter mapping, Markdown body) of a README; fails unless the front matter is well formed."""
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.DOTALL)
    assert match, "README does not start with a --- front matter block"
    return yaml.safe_load(match.group(1)), match.group(2)


def code_blocks(body: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", body, flags=re.DOTALL)


def summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_front_matter_of_a_local_run(make_run):
    meta, _ = split_card(render_model_card([read_run(make_run())], repo_id=REPO_ID))
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == ["image-classification", "timm", "knowledge-distillation", "vitkd", "kd"]
    assert "datasets" not in meta and "model-index" not in meta and "base_model" not in meta  # all local
    meta, _ = split_card(render_model_card([read_run(make_run("hub.license=mit"))]))
    assert meta["license"] == "mit"


def test_hub_dataset_and_timm_teacher_give_ids_and_eval_results(make_run):
    run = read_run(make_run())
    recipe = dataclasses.replace(
        run.recipe,
        data=dataclasses.replace(run.recipe.data, source="uoft-cs/cifar100"),
        teacher=ModelConfig("resnet34.tv_in1k", checkpoint="timm"),
    )
    card = render_model_card([dataclasses.replace(run, recipe=recipe)], repo_id=REPO_ID)
    meta, _ = split_card(card)
    assert meta["datasets"] == ["uoft-cs/cifar100"]
    assert meta["base_model"] == "timm/resnet34.tv_in1k"  # timm's Hub id of the tagged teacher
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "resnet8-kd"
    assert result["dataset"]["type"] == "uoft-cs/cifar100"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        "accuracy": round(run.metrics["top1"], 2), "top_5_accuracy": round(run.metrics["top5"], 2)
    }
    assert ModelCard(card).data.base_model == "timm/resnet34.tv_in1k"  # the Hub's own parser accepts it


def test_single_run_body(make_run):
    path = make_run("paper.published_top1=50.0", "paper.table=Table 1")
    best = summary(path)["best"]
    _, body = split_card(render_model_card([read_run(path)]))
    assert "`cifar_resnet8` → `cifar_resnet8` (kd)" in body
    assert "`temperature`: 4.0" in body and "CE weight 1.0" in body
    assert f"| top-1 accuracy (%) | {best['top1']:.2f} |" in body
    assert f"| top-5 accuracy (%) | {best['top5']:.2f} |" in body
    assert f"| expected calibration error (%) | {best['ece']:.2f} |" in body
    assert f"| teacher top-1 accuracy (%) | {summary(path)['teacher']['top1']:.2f} |" in body
    assert f"50.00 (this model: {best['top1'] - 50:+.2f})" in body and "Table 1" in body
    assert f"best epoch (epoch {best['epoch']})" in body
    run_info = json.loads((path / "run_info.json").read_text())
    assert code_blocks(body, "bash") == [run_info["command"]]
    (recipe_block,) = code_blocks(body, "yaml")
    assert yaml.safe_load(recipe_block) == yaml.safe_load((path / "recipe.yaml").read_text())
    assert f"| torch | {torch.__version__.split('+')[0]}" in body
    assert "SHA-256 of `cifar_resnet8`'s checkpoint" in body  # a local teacher file is hashed
    assert "global batch 16" in body
    assert "crop_pct 1.0, crop_mode center, interpolation bilinear" in body  # the export's data config


@pytest.mark.parametrize(("sets", "imports_vitkd"), [((), True), (TINY_VIT, False)], ids=["cifar-zoo", "timm-vit"])
def test_loading_snippet_runs_against_the_export(make_run, sets, imports_vitkd):
    run = read_run(make_run(*sets))
    (snippet,) = code_blocks(split_card(render_model_card([run], repo_id=REPO_ID))[1], "python")
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in snippet
    assert ("import vitkd" in snippet) is imports_vitkd  # timm-native architectures load with bare timm
    namespace: dict = {}
    exec(snippet.replace(f"hf-hub:{REPO_ID}", f"local-dir:{run.export_dir}"), namespace)
    transform = namespace["transform"]
    assert transform.transforms[-1].mean.tolist() == pytest.approx(run.recipe.data.effective_mean)
    image = torch.rand(3, 40, 40)
    assert namespace["model"](transform(image).unsqueeze(0)).shape == (1, 10)


def test_seed_group_shows_mean_and_sample_std(make_run):
    paths = [make_run(seed=0), make_run("train.log_every=3", seed=1)]  # cadence: still one experiment
    top1s = [summary(p)["best"]["top1"] for p in paths]
    meta, body = split_card(render_model_card([read_run(p) for p in paths]))
    assert f"| top-1 accuracy (%) | {statistics.fmean(top1s):.2f} ± {statistics.stdev(top1s):.2f} |" in body
    assert "over 2 seeds ([0, 1])" in body and "The weights in this repository are those of the seed-0 run" in body
    commands = [json.loads((p / "run_info.json").read_text())["command"] for p in paths]
    assert code_blocks(body, "bash") == ["\n".join(commands)]


def test_last_epoch_report_uses_last_metrics(make_run):
    path = make_run("train.report=last")
    run = read_run(path)
    assert run.export_dir == path / "student"
    last = summary(path)["last"]
    _, body = split_card(render_model_card([run]))
    assert f"| top-1 accuracy (%) | {last['top1']:.2f} |" in body and f"last epoch (epoch {last['epoch']})" in body


def test_seed_group_of_different_experiments_is_refused(make_run):
    runs = [read_run(make_run(seed=0)), read_run(make_run("optim.lr=0.01", seed=1))]
    with pytest.raises(ValueError, match=r"not one experiment .*optim\.lr"):
        render_model_card(runs)


def test_seed_group_with_repeated_seed_is_refused(make_run, tmp_path):
    copy = shutil.copytree(make_run(), tmp_path / "copy")
    with pytest.raises(ValueError, match=r"distinct train.seed values, got \[0, 0\]"):
        render_model_card([read_run(make_run()), read_run(copy)])


def test_older_run_without_run_info_or_top5_still_renders(make_run, tmp_path):
    path = shutil.copytree(make_run(), tmp_path / "old")
    (path / "run_info.json").unlink()
    data = summary(path)
    del data["best"]["top5"]
    (path / "summary.json").write_text(json.dumps(data))
    _, body = split_card(render_model_card([read_run(path)]))
    assert "| top-5 accuracy (%) | — |" in body and "Hardware" not in body and "```bash" not in body


def test_missing_export_is_named(make_run, tmp_path):
    path = shutil.copytree(make_run(), tmp_path / "run")
    (path / "student_best" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="student_best/config.json is missing"):
        render_model_card([read_run(path)])


def test_export_card_for_bare_export(make_run):
    meta, body = split_card(render_export_card(make_run() / "student", repo_id=REPO_ID))
    assert meta["library_name"] == "timm" and "image-classification" in meta["tags"]
    assert "(3, 16, 16)" in body and "10 classes" in body and "crop_pct 1.0" in body
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in code_blocks(body, "python")[0]


def test_needs_vitkd_reads_timm_registry():
    import vitkd  # noqa: F401  (registers vitkd's CIFAR zoo with timm)

    assert needs_vitkd("vit_tiny_patch16_224") is False and needs_vitkd("cifar_resnet8") is True
    with pytest.raises(ValueError, match="registered neither by timm nor by vitkd"):
        needs_vitkd("no_such_architecture")
