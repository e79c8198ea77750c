"""vitkd.model_card: Hub front matter + Markdown body rendered from fake run folders."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from test_export import export_tiny_vit

from vitkd.model_card import needs_vitkd, read_run, render_export_card, render_model_card

REPO_ID = "alice/vit-tiny-luminet"
COMMAND = "accelerate launch scripts/distill.py --recipe recipes/cifar100/vit_luminet.yaml"
VERSIONS = {"vitkd": "0.1.0", "torch": "2.14.1", "timm": "1.0.31", "accelerate": "1.15.0", "datasets": "3.0"}


def make_recipe(seed: int = 0, **sections) -> dict:
    recipe = {
        "teacher": {"name": "resnet34.tv_in1k", "checkpoint": "timm"},
        "student": {"name": "vit_tiny_patch16_224"},
        "distill": {"method": "luminet", "kwargs": {"alpha": 33, "temperature": 4}, "ce_weight": 2.0},
        "data": {"source": "uoft-cs/cifar100"},
        "train": {"epochs": 240, "batch_size": 64, "seed": seed},
        "paper": {"table": "Table 1", "row": "resnet32x4 -> resnet8x4", "published_top1": 77.50},
        "hub": {"repo_id": REPO_ID},
    }
    recipe.update(sections)
    return recipe


def write_run(
    root: Path,
    export: Path,
    *,
    recipe: dict,
    best: dict,
    last: dict,
    report: str = "best",
    teacher_sha256: dict | None = None,
) -> Path:
    """A run folder as vitkd.engine writes it (metrics in %), with copies of ``export`` as both students."""
    root.mkdir(parents=True)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (root / "run_info.json").write_text(
        json.dumps(
            {
                "command": COMMAND + f" --seed {recipe['train']['seed']}",
                "versions": VERSIONS,
                "hardware": {
                    "num_processes": 1,
                    "per_device_batch": 64,
                    "global_batch": 64,
                    "device": "cuda",
                    "mixed_precision": "bf16",
                },
                "teacher_sha256": teacher_sha256 or {"resnet34.tv_in1k": None},
            }
        )
    )
    (root / "summary.json").write_text(
        json.dumps({"report": report, "best": best, "last": last, "teacher": metrics(0, 73.31)})
    )
    shutil.copytree(export, root / "student")
    shutil.copytree(export, root / "student_best")
    return root


def metrics(epoch: int, top1: float, top5: float = 94.0, ece: float = 3.0) -> dict:
    return {"epoch": epoch, "top1": top1, "top5": top5, "nll": 1.1, "ece": ece}


@pytest.fixture(scope="module")
def vit_export(tmp_path_factory) -> Path:
    return export_tiny_vit(tmp_path_factory.mktemp("export") / "student")


@pytest.fixture
def run(tmp_path, vit_export) -> Path:
    return write_run(
        tmp_path / "run0",
        vit_export,
        recipe=make_recipe(seed=0),
        best=metrics(231, 77.12, 94.3, 3.125),
        last=metrics(240, 76.9),
    )


def split_card(text: str) -> tuple[dict, str]:
    """(front matter mapping, Markdown body) of a README; fails unless the front matter is well formed."""
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.DOTALL)
    assert match, "README does not start with a --- front matter block"
    return yaml.safe_load(match.group(1)), match.group(2)


def code_blocks(body: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", body, flags=re.DOTALL)


def test_single_run_front_matter(run):
    meta, _ = split_card(render_model_card([run]))
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == ["image-classification", "timm", "knowledge-distillation", "vitkd", "luminet"]
    assert meta["datasets"] == ["uoft-cs/cifar100"]
    assert "accuracy" in meta["metrics"]
    assert meta["base_model"] == "timm/resnet34.tv_in1k"  # timm's Hub id of the tagged teacher
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "vit-tiny-luminet"
    assert result["dataset"]["type"] == "uoft-cs/cifar100"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 77.12, "top_5_accuracy": 94.3}
    # the Hub's own parser accepts it too
    assert ModelCard(render_model_card([run])).data.base_model == "timm/resnet34.tv_in1k"


def test_single_run_body(run):
    _, body = split_card(render_model_card([run]))
    assert "`resnet34.tv_in1k`" in body and "`vit_tiny_patch16_224`" in body and "luminet" in body
    assert "`alpha`: 33" in body and "`temperature`: 4" in body and "CE weight 2.0" in body
    assert "| top-1 accuracy (%) | 77.12 |" in body
    assert "| top-5 accuracy (%) | 94.30 |" in body
    assert "| expected calibration error (%) | 3.12 |" in body
    assert "| teacher top-1 accuracy (%) | 73.31 |" in body
    assert "77.50 (this model: -0.38)" in body and "Table 1" in body
    assert "best epoch (epoch 231)" in body
    assert code_blocks(body, "bash") == [COMMAND + " --seed 0"]
    (recipe_block,) = code_blocks(body, "yaml")
    assert yaml.safe_load(recipe_block) == make_recipe(seed=0)
    assert "| timm | 1.0.31 |" in body and "| torch | 2.14.1 |" in body
    assert "SHA-256" not in body  # timm's pretrained teacher weights have no local checkpoint to hash
    assert "global batch 64" in body and "bf16" in body


def test_loading_snippet_runs_against_the_export(run):
    _, body = split_card(render_model_card([run]))
    (snippet,) = code_blocks(body, "python")
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in snippet
    assert "import vitkd" not in snippet  # a timm-native architecture loads with bare timm
    namespace: dict = {}
    exec(snippet.replace(f"hf-hub:{REPO_ID}", f"local-dir:{run / 'student_best'}"), namespace)
    image = torch.rand(3, 40, 40)
    assert namespace["transform"].transforms[-1].mean.tolist() == pytest.approx([0.5071, 0.4867, 0.4408])
    assert namespace["model"](namespace["transform"](image).unsqueeze(0)).shape == (1, 5)


def test_seed_group_shows_mean_and_sample_std(tmp_path, vit_export):
    top1s, eces = [77.0, 78.1], [3.1, 4.5]
    runs = [
        write_run(
            tmp_path / f"run{seed}",
            vit_export,
            recipe=make_recipe(seed=seed),
            best=metrics(200 + seed, top1, ece=ece),
            last=metrics(240, 70.0),
        )
        for seed, top1, ece in zip((0, 1), top1s, eces, strict=True)
    ]
    meta, body = split_card(render_model_card(runs))
    assert f"| top-1 accuracy (%) | {np.mean(top1s):.2f} ± {np.std(top1s, ddof=1):.2f} |" in body
    assert f"| expected calibration error (%) | {np.mean(eces):.2f} ± {np.std(eces, ddof=1):.2f} |" in body
    assert "| top-5 accuracy (%) | 94.00 ± 0.00 |" in body
    assert f"(this model: {np.mean(top1s) - 77.5:+.2f})" in body
    assert "over 2 seeds ([0, 1])" in body and "epochs 200, 201" in body
    assert code_blocks(body, "bash") == [f"{COMMAND} --seed 0\n{COMMAND} --seed 1"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == round(np.mean(top1s), 2)


def test_last_epoch_report_uses_last_metrics(tmp_path, vit_export):
    run = write_run(
        tmp_path / "run",
        vit_export,
        recipe=make_recipe(),
        best=metrics(100, 80.0),
        last=metrics(240, 75.25),
        report="last",
    )
    assert read_run(run).export_dir == run / "student"
    _, body = split_card(render_model_card([run]))
    assert "| top-1 accuracy (%) | 75.25 |" in body and "last epoch (epoch 240)" in body


def test_local_sources_give_no_hub_ids_and_no_published_row(tmp_path, vit_export):
    data_dir = tmp_path / "data" / "cifar"
    data_dir.mkdir(parents=True)
    recipe = make_recipe(
        teacher=[
            {"name": "resnet32x4", "checkpoint": "ckpts/resnet32x4_vanilla/ckpt_epoch_240.pth"},
            {"name": "wrn_40_2", "checkpoint": "hf-hub:bob/wrn-40-2@v1"},
        ],
        data={"source": str(data_dir)},
        paper={"table": "Table 1", "row": "x"},
        hub={"license": "mit"},
    )
    run = write_run(
        tmp_path / "run",
        vit_export,
        recipe=recipe,
        best=metrics(1, 50.0),
        last=metrics(1, 50.0),
        teacher_sha256={"resnet32x4": "ab" * 32, "wrn_40_2": None},
    )
    meta, body = split_card(render_model_card([run]))
    assert "datasets" not in meta and "model-index" not in meta
    assert meta["base_model"] == "bob/wrn-40-2"  # only the Hub teacher, revision stripped
    assert meta["license"] == "mit"
    assert "published" not in body
    assert "`resnet32x4` + `wrn_40_2`" in body and "(weights: `hf-hub:bob/wrn-40-2@v1`)" in body
    assert f"SHA-256 of `resnet32x4`'s checkpoint: `{'ab' * 32}`" in body and "`wrn_40_2`'s" not in body
    assert "hf-hub:<owner>/<name>" in body  # neither repo_id nor hub.repo_id known


def test_seed_group_of_different_recipes_is_refused(tmp_path, vit_export):
    runs = [
        write_run(
            tmp_path / "a", vit_export, recipe=make_recipe(seed=0), best=metrics(1, 1.0), last=metrics(1, 1.0)
        ),
        write_run(
            tmp_path / "b",
            vit_export,
            recipe=make_recipe(seed=1, data={"source": "other/set"}),
            best=metrics(1, 1.0),
            last=metrics(1, 1.0),
        ),
    ]
    with pytest.raises(ValueError, match="differ in recipe field 'data.source'"):
        render_model_card(runs)


def test_seed_group_with_repeated_seed_is_refused(tmp_path, vit_export):
    runs = [
        write_run(
            tmp_path / name,
            vit_export,
            recipe=make_recipe(seed=3),
            best=metrics(1, 1.0),
            last=metrics(1, 1.0),
        )
        for name in ("a", "b")
    ]
    with pytest.raises(ValueError, match=r"distinct train.seed values, got \[3, 3\]"):
        render_model_card(runs)


def test_missing_run_files_and_metrics_are_named(tmp_path, run):
    (run / "run_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks run_info.json"):
        render_model_card([run])
    other = write_run(
        tmp_path / "other",
        run / "student",
        recipe=make_recipe(),
        best={"epoch": 1, "top1": 1.0},
        last=metrics(1, 1.0),
    )
    with pytest.raises(ValueError, match="'best' entry has no 'top5'"):
        render_model_card([other])
    (other / "summary.json").write_text(json.dumps({"report": "final"}))
    with pytest.raises(ValueError, match="'report' must be 'best' or 'last', got 'final'"):
        render_model_card([other])


def test_export_card_for_bare_export(vit_export):
    meta, body = split_card(render_export_card(vit_export, repo_id=REPO_ID))
    assert meta["library_name"] == "timm" and "image-classification" in meta["tags"]
    assert "(3, 32, 32)" in body and "5 classes" in body
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in code_blocks(body, "python")[0]


def test_needs_vitkd_reads_timm_registry():
    assert needs_vitkd("vit_tiny_patch16_224") is False
    with pytest.raises(ValueError, match="registered neither by timm nor by vitkd"):
        needs_vitkd("no_such_architecture")


def test_cifar_zoo_card_snippet_imports_vitkd(tmp_path):
    import vitkd  # noqa: F401  (registers vitkd's CIFAR zoo with timm)

    if not timm.is_model("cifar_resnet8"):
        pytest.skip("vitkd.models does not register cifar_resnet8 yet")
    from vitkd.export import export_student

    export = export_student(
        timm.create_model("cifar_resnet8", num_classes=5),
        tmp_path / "export",
        architecture="cifar_resnet8",
        num_classes=5,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        input_size=(3, 32, 32),
    )
    assert needs_vitkd("cifar_resnet8") is True
    run = write_run(
        tmp_path / "run",
        export,
        recipe=make_recipe(student={"name": "cifar_resnet8"}),
        best=metrics(1, 60.0),
        last=metrics(1, 60.0),
    )
    (snippet,) = code_blocks(split_card(render_model_card([run]))[1], "python")
    assert "import timm\nimport vitkd" in snippet
