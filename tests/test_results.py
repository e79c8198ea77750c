"""Results tables from run folders written by the engine: seeds averaged, mean ± std, Δ vs KD, CSV."""

import csv
import io
import json
import logging
import runpy
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from vitkd.results import aggregate, to_csv, to_markdown
from vitkd.run_folder import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
LUMINET = ("distill.method=luminet", "distill.kwargs={temperature: 4.0, alpha: 4.0}", "paper.published_top1=50.0")


def reported(run: Path, key: str = "top1") -> float:
    """The reported epoch's metric, straight from the engine's summary.json."""
    summary = json.loads((run / "summary.json").read_text())
    return summary[summary["report"]][key]


def rows_of(*paths):
    return aggregate([read_run(p) for p in find_runs(paths)])


@pytest.fixture(scope="module")
def two_methods(make_run):
    """KD and LumiNet, two seeds each; LumiNet's recipe states a published number."""
    return {"kd": [make_run(seed=s) for s in (0, 1)], "luminet": [make_run(*LUMINET, seed=s) for s in (0, 1)]}


def test_mean_std_delta_vs_kd_and_published(two_methods):
    kd, lumi = rows_of(*two_methods["kd"], *two_methods["luminet"])  # KD before LumiNet, as in the paper
    assert (kd.method, lumi.method) == ("kd", "luminet")
    assert (kd.n, lumi.n) == (2, 2)  # seeds and run folders differ: same experiment
    kd_top1 = [reported(r) for r in two_methods["kd"]]
    lumi_top1 = [reported(r) for r in two_methods["luminet"]]
    assert kd.top1_mean == pytest.approx(statistics.fmean(kd_top1))
    assert kd.top1_std == pytest.approx(statistics.stdev(kd_top1))
    assert lumi.ece_mean == pytest.approx(statistics.fmean(reported(r, "ece") for r in two_methods["luminet"]))
    assert lumi.delta_kd == pytest.approx(statistics.fmean(lumi_top1) - statistics.fmean(kd_top1))
    assert kd.delta_kd is None and kd.published is None and kd.diff_published is None
    assert lumi.published == 50.0 and lumi.diff_published == pytest.approx(lumi.top1_mean - 50.0)
    teacher = json.loads((two_methods["kd"][0] / "summary.json").read_text())["teacher"]["top1"]
    assert lumi.teacher_top1 == pytest.approx(teacher) and lumi.variant == ""

    table = to_markdown([kd, lumi])
    line = next(ln for ln in table.splitlines() if "| luminet" in ln)
    expected = f"{lumi.top1_mean:.2f} ± {lumi.top1_std:.2f}"
    for cell in ("cifar_resnet8 → cifar_resnet8", expected, f"{lumi.delta_kd:+.2f}", "50.00"):
        assert cell in line
    assert "Variant" not in table  # empty in every row: left out


def test_csv_round_trip(two_methods):
    rows = rows_of(*two_methods["kd"], *two_methods["luminet"])
    records = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["method"] for r in records] == ["kd", "luminet"]
    kd, lumi = records
    assert float(lumi["top1_mean"]) == pytest.approx(rows[1].top1_mean) and int(lumi["n"]) == 2
    assert float(lumi["delta_kd"]) == pytest.approx(rows[1].delta_kd)
    assert kd["delta_kd"] == "" and kd["published"] == ""
    assert lumi["runs"].split(";") == [str(p) for p in two_methods["luminet"]]


def test_each_run_reports_its_own_epoch(make_run):
    run = make_run("train.report=last")
    (row,) = rows_of(run)
    summary = json.loads((run / "summary.json").read_text())
    assert row.top1_mean == summary["last"]["top1"] and row.report == "last" and row.top1_std is None
    assert "kd (last)" in to_markdown([row])


def test_different_settings_make_separate_rows_labelled_by_the_difference(make_run):
    kd = make_run()
    t4 = make_run(*LUMINET)
    t8 = make_run(*LUMINET, "distill.kwargs.temperature=8.0")
    lr = make_run(*LUMINET, "optim.lr=0.01")
    logged = make_run(*LUMINET, "train.log_every=7", seed=1)  # cadence is not the experiment: a seed of t4
    rows = {row.variant: row for row in rows_of(kd, t4, t8, lr, logged) if row.method == "luminet"}
    assert set(rows) == {
        "distill.kwargs.temperature=4.0, optim.lr=0.05",
        "distill.kwargs.temperature=8.0, optim.lr=0.05",
        "distill.kwargs.temperature=4.0, optim.lr=0.01",
    }
    assert rows["distill.kwargs.temperature=4.0, optim.lr=0.05"].n == 2
    # Δ only against KD trained under the same settings: the lr-0.01 run has no such KD run
    assert rows["distill.kwargs.temperature=8.0, optim.lr=0.05"].delta_kd == pytest.approx(
        reported(t8) - reported(kd)
    )
    assert rows["distill.kwargs.temperature=4.0, optim.lr=0.01"].delta_kd is None


def test_student_alone_heads_its_students_rows(make_run):
    rows = rows_of(make_run(), make_run("distill.method=none", "teacher=null"))
    assert [(r.teacher, r.method) for r in rows] == [("—", "none"), ("cifar_resnet8", "kd")]
    assert rows[0].delta_kd is None


def test_older_run_with_unknown_and_missing_keys_is_the_same_experiment(make_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(make_run(seed=1), old)
    raw = yaml.safe_load((old / "recipe.yaml").read_text())
    raw["train"]["renamed_since"] = 3  # a key a later schema dropped
    del raw["optim"]["momentum"]  # a key added later, at its default value
    (old / "recipe.yaml").write_text(yaml.safe_dump(raw))
    assert read_run(old).recipe.optim.momentum == 0.9
    (row,) = rows_of(make_run(seed=0), old)
    assert row.n == 2


def test_unfinished_runs_are_skipped_and_empty_patterns_fail(make_run, tmp_path, caplog):
    shutil.copytree(make_run(), tmp_path / "done")
    shutil.copytree(make_run(), tmp_path / "running")
    (tmp_path / "running" / "summary.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert find_runs([tmp_path]) == [tmp_path / "done"]
    assert "running" in caplog.text and "unfinished" in caplog.text
    with pytest.raises(FileNotFoundError, match="no finished run folder"):
        find_runs([str(tmp_path / "nothing*")])


def test_malformed_run_folders_are_named(make_run, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(make_run(), run)
    (run / "recipe.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="recipe.yaml is missing"):
        read_run(run)
    run = tmp_path / "b"
    shutil.copytree(make_run(), run)
    (run / "summary.json").write_text(json.dumps({"report": "best", "best": None, "last": {"top1": 1.0}}))
    with pytest.raises(ValueError, match="reports the 'best' epoch"):
        read_run(run)


def test_make_table_script_writes_markdown_and_csv(two_methods, tmp_path, capsys):
    runs = tmp_path / "runs"
    for method, paths in two_methods.items():
        for seed, path in enumerate(paths):
            shutil.copytree(path, runs / method / f"seed{seed}")
    out_md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    main = runpy.run_path(str(REPO / "scripts/make_table.py"))["main"]
    assert main([f"{runs}/*", "--csv", str(out_csv), "--markdown", str(out_md)]) == 0
    printed = capsys.readouterr().out
    assert "| luminet |" in printed and out_md.read_text() == printed.rstrip("\n") + "\n"
    assert len(list(csv.DictReader(out_csv.open()))) == 2
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no finished run folder" in capsys.readouterr().err
