"""Results tables from run folders: grouping over seeds, mean ± std, Δ vs KD, published numbers, CSV."""

import csv
import json
import logging
import runpy
import statistics
from pathlib import Path

import pytest
import yaml

from vitkd.recipe import recipe_from_dict, recipe_to_dict
from vitkd.results import aggregate, find_run_dirs, read_run, to_markdown, write_csv

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "data": {"source": "digits", "transform": "none", "image_size": 8},
    "teacher": {"name": "cifar_resnet20", "checkpoint": "teacher.safetensors"},
    "student": {"name": "cifar_resnet8"},
    "train": {"epochs": 2, "batch_size": 16},
}
METHODS = {
    "kd": {"method": "kd", "kwargs": {"temperature": 4.0}, "ce_weight": 0.1, "kd_weight": 0.9},
    "luminet": {"method": "luminet", "kwargs": {"temperature": 4.0, "alpha": 31.0}, "ce_weight": 2.0},
}


def make_run(root: Path, name: str, seed: int, top1: float, *, method: str = "luminet", report: str = "best",
             published: float | None = None, ece: float = 5.0, **sections) -> Path:
    """A run folder as scripts/distill.py leaves it: resolved recipe.yaml + summary.json."""
    raw = {**RECIPE, "name": name, "distill": METHODS[method], **sections}
    raw["train"] = {**RECIPE["train"], "seed": seed, "output_dir": f"{root}/{name}/seed{seed}",
                    "report": report, **sections.get("train", {})}
    raw["paper"] = {"table": "Table 1a", "published_top1": published}
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe_from_dict(raw))))
    reported = {"epoch": 2, "top1": top1, "top5": 99.0, "nll": 0.3, "ece": ece}
    shift = -3.0 if report == "best" else 3.0  # the epoch not reported is worse (last) or better (best)
    other = {"epoch": 1, "top1": top1 + shift, "top5": 98.0, "nll": 0.4, "ece": 9.0}
    epochs = {"best": reported, "last": other} if report == "best" else {"best": other, "last": reported}
    summary = {"report": report, **epochs, "teacher": {"top1": 90.0}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def two_methods(tmp_path):
    """KD and LumiNet, two seeds each; LumiNet has a published number."""
    make_run(tmp_path, "kd", 0, 70.0, method="kd", ece=4.0)
    make_run(tmp_path, "kd", 1, 72.0, method="kd", ece=6.0)
    make_run(tmp_path, "lumi", 0, 75.0, published=74.0)
    make_run(tmp_path, "lumi", 1, 76.0, published=74.0)
    return tmp_path


def rows_of(*patterns):
    return aggregate([read_run(p) for p in find_run_dirs(patterns)])


def test_mean_std_delta_vs_kd_and_published(two_methods):
    kd, lumi = rows_of(two_methods)  # KD before LumiNet, as in the paper
    assert (kd.method, lumi.method) == ("kd", "luminet")
    assert (kd.n, lumi.n) == (2, 2)  # seeds and run folders differ: same experiment
    assert kd.top1_mean == pytest.approx(71.0) and kd.top1_std == pytest.approx(statistics.stdev([70, 72]))
    assert lumi.top1_mean == pytest.approx(75.5) and lumi.top1_std == pytest.approx(0.5**0.5)
    assert kd.ece_mean == pytest.approx(5.0)
    assert lumi.delta_kd == pytest.approx(4.5) and kd.delta_kd is None
    assert lumi.published == 74.0 and lumi.diff_published == pytest.approx(1.5)
    assert kd.diff_published is None
    assert lumi.teacher_top1 == 90.0 and lumi.variant == ""

    table = to_markdown([kd, lumi])
    line = next(ln for ln in table.splitlines() if "| luminet" in ln)
    for cell in ("cifar_resnet20 → cifar_resnet8", "75.50 ± 0.71", "+4.50", "74.00", "+1.50"):
        assert cell in line
    assert "Variant" not in table  # empty in every row: left out


def test_csv_round_trip(two_methods, tmp_path):
    path = tmp_path / "table.csv"
    rows = rows_of(two_methods)
    write_csv(rows, path)
    with path.open() as f:
        records = list(csv.DictReader(f))
    assert [r["method"] for r in records] == ["kd", "luminet"]
    lumi = records[1]
    assert float(lumi["top1_mean"]) == pytest.approx(75.5) and int(lumi["n"]) == 2
    assert float(lumi["delta_kd"]) == pytest.approx(4.5)
    assert float(lumi["diff_published"]) == pytest.approx(1.5)
    assert records[0]["delta_kd"] == "" and records[0]["published"] == ""
    assert len(lumi["runs"].split(";")) == 2


def test_each_run_reports_its_own_epoch(tmp_path):
    make_run(tmp_path, "a", 0, 60.0, report="last")
    (row,) = rows_of(tmp_path)
    assert row.top1_mean == 60.0 and row.report == "last" and row.top1_std is None
    assert "luminet (last)" in to_markdown([row])


def test_different_settings_make_separate_rows_labelled_by_the_difference(tmp_path):
    make_run(tmp_path, "kd", 0, 70.0, method="kd")
    make_run(tmp_path, "t4", 0, 74.0)
    t8 = METHODS["luminet"] | {"kwargs": {"temperature": 8.0, "alpha": 31.0}}
    make_run(tmp_path, "t8", 0, 73.0, distill=t8)
    make_run(tmp_path, "lr", 0, 72.0, optim={"lr": 0.01})
    rows = {row.variant: row for row in rows_of(tmp_path) if row.method == "luminet"}
    assert set(rows) == {
        "distill.kwargs.temperature=4.0, optim.lr=0.05",
        "distill.kwargs.temperature=8.0, optim.lr=0.05",
        "distill.kwargs.temperature=4.0, optim.lr=0.01",
    }
    # Δ only against KD trained under the same settings: the lr-0.01 run has no such KD run
    assert rows["distill.kwargs.temperature=8.0, optim.lr=0.05"].delta_kd == pytest.approx(3.0)
    assert rows["distill.kwargs.temperature=4.0, optim.lr=0.01"].delta_kd is None


def test_student_alone_heads_its_students_rows(tmp_path):
    make_run(tmp_path, "kd", 0, 70.0, method="kd")
    make_run(tmp_path, "alone", 0, 65.0, teacher=None, distill={"method": "none"})
    rows = rows_of(tmp_path)
    assert [(r.teacher, r.method) for r in rows] == [("—", "none"), ("cifar_resnet20", "kd")]
    assert rows[0].delta_kd is None


def test_unfinished_runs_are_skipped_and_empty_patterns_fail(tmp_path, caplog):
    make_run(tmp_path, "done", 0, 70.0)
    (make_run(tmp_path, "running", 0, 70.0) / "summary.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert find_run_dirs([tmp_path]) == [tmp_path / "done" / "seed0"]
    assert "running" in caplog.text and "unfinished" in caplog.text
    with pytest.raises(FileNotFoundError, match="no finished run folder"):
        find_run_dirs([str(tmp_path / "nothing*")])


def test_malformed_run_folders_are_named(tmp_path):
    run = make_run(tmp_path, "a", 0, 70.0)
    (run / "recipe.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="recipe.yaml is missing"):
        read_run(run)
    run = make_run(tmp_path, "b", 0, 70.0)
    (run / "summary.json").write_text(json.dumps({"report": "best", "best": None, "last": {"top1": 1.0}}))
    with pytest.raises(ValueError, match="reports the 'best' epoch"):
        read_run(run)


def test_make_table_script_writes_markdown_and_csv(two_methods, tmp_path, capsys):
    out_md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    main = runpy.run_path(str(REPO / "scripts/make_table.py"))["main"]
    assert main([f"{two_methods}/*", "--csv", str(out_csv), "--markdown", str(out_md)]) == 0
    printed = capsys.readouterr().out
    assert "75.50 ± 0.71" in printed and out_md.read_text() == printed.rstrip("\n") + "\n"
    assert len(list(csv.DictReader(out_csv.open()))) == 2
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no finished run folder" in capsys.readouterr().err
