"""vitkd.benchmark: timing helpers, step runners, accuracy aggregation, reports and plots (tiny sizes;
no assertion is about how fast anything is)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from vitkd.benchmark import accuracy, plots, speed, steps, timing
from vitkd.benchmark.report import machine_info, markdown_table, write_outputs
from vitkd.data import DataConfig
from vitkd.engine.trainer import make_accelerator
from vitkd.losses import available_losses
from vitkd.recipe import TrainConfig, load_recipe, recipe_to_dict

BENCH_RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "bench"


@pytest.fixture(scope="module")
def accelerator(tmp_path_factory):
    # the engine's own constructor: it also clears precision settings an earlier test's run left behind
    return make_accelerator(TrainConfig(cpu=True), tmp_path_factory.mktemp("bench"))


# ----------------------------------------------------------------------------- timing


def test_interleave_alternates_order_and_drops_warmup():
    calls, counter = [], iter(range(100))

    def case(name):
        def run():
            calls.append(name)
            return float(next(counter))

        return run

    samples = timing.interleave({"a": case("a"), "b": case("b"), "c": case("c")}, reps=3, warmup=1)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    # the warm-up repetition's values (0, 1, 2) are dropped; each case keeps its own values
    assert samples == {"a": [5.0, 6.0, 11.0], "b": [4.0, 7.0, 10.0], "c": [3.0, 8.0, 9.0]}


@pytest.mark.parametrize("reps, warmup", [(0, 1), (2, -1)])
def test_interleave_rejects_bad_counts(reps, warmup):
    with pytest.raises(ValueError, match="reps >= 1 and warmup >= 0"):
        timing.interleave({"a": lambda: 1.0}, reps=reps, warmup=warmup)


def test_spread_matches_statistics_and_scales():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    s = timing.spread(samples)
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    assert (s.median, s.q1, s.q3, s.n) == (median, q1, q3, 6)
    assert s.median == statistics.median(samples)
    assert timing.spread([2.5]) == timing.Spread(2.5, 2.5, 2.5, 1)
    assert timing.spread([1.0, 3.0]).scaled(1e3) == timing.Spread(2000.0, 1500.0, 2500.0, 2)
    with pytest.raises(ValueError, match="at least one sample"):
        timing.spread([])


def test_loss_timings_cover_every_loss_and_table_is_relative_to_kd():
    torch.manual_seed(0)
    ms = timing.loss_timings(8, 5, reps=2, warmup=1, device=torch.device("cpu"))
    assert sorted(ms) == available_losses()
    assert all(math.isfinite(v) and v > 0 for v in ms.values())
    table = timing.loss_table({"8×5": ms})
    kd_row = next(line for line in table.splitlines() if line.startswith("| kd |"))
    assert kd_row.endswith("| 1.00 |")
    assert len(table.splitlines()) == 2 + len(ms)


# ----------------------------------------------------------------------------- training steps


@pytest.fixture(scope="module")
def kd_workload():
    torch.manual_seed(0)  # bench kd recipe: cifar_resnet20 -> cifar_resnet8, 16 px, 1 channel
    return steps.load_workload(BENCH_RECIPES / "kd.yaml", num_classes=10, batch_size=4, steps=2,
                               device=torch.device("cpu"))


def test_workload_batches_follow_the_recipe(kd_workload):
    images, labels = kd_workload.batches[0]
    assert images.shape == (4, 1, 16, 16) and labels.shape == (4,) and labels.dtype == torch.int64
    assert kd_workload.images_per_pass == 8
    assert kd_workload.recipe.teachers[0].checkpoint is None  # random teacher: nothing is read


def test_engine_plain_and_timm_train_the_same_step(kd_workload, accelerator, tmp_path):
    """Same initial student, batches, loss and optimiser: one pass leaves (nearly) the same weights."""
    runners = steps.step_runners(kd_workload, accelerator, tmp_path)
    assert sorted(runners) == ["engine", "plain", "timm"]
    initial = {k: v.clone() for k, v in runners["plain"].student.state_dict().items()}
    for name, runner in runners.items():
        seconds = runner.seconds()
        assert seconds > 0, name
    weights = {name: r.student.state_dict() for name, r in runners.items()}
    changed = [k for k in initial if initial[k].is_floating_point() and not torch.equal(initial[k], weights["plain"][k])]
    assert changed, "the pass did not train the student"
    for name in ("engine", "timm"):
        for key, value in weights["plain"].items():
            torch.testing.assert_close(weights[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")


def test_timm_runner_only_for_kd_and_unknown_implementation_named(accelerator, tmp_path):
    workload = steps.load_workload(BENCH_RECIPES / "luminet.yaml", num_classes=10, batch_size=4, steps=1,
                                   device=torch.device("cpu"))
    assert sorted(steps.step_runners(workload, accelerator, tmp_path)) == ["engine", "plain"]
    with pytest.raises(ValueError, match=r"unknown implementation\(s\) \['jax'\]"):
        steps.step_runners(workload, accelerator, tmp_path, ("engine", "jax"))


def test_step_table_ratios_are_of_medians():
    rate = timing.Spread
    result = speed.StepResult("t→s", "kd", 4, {"engine": rate(90.0, 80.0, 95.0, 3), "plain": rate(100.0, 99.0, 101.0, 3),
                                                "timm": rate(60.0, 50.0, 70.0, 3)})
    assert result.ratio("engine", "plain") == pytest.approx(0.9)
    assert result.ratio("engine", "timm") == pytest.approx(1.5)
    lumi = speed.StepResult("t→s", "luminet", 4, {"engine": rate(50.0, 50.0, 50.0, 1), "plain": rate(40.0, 40.0, 40.0, 1)})
    assert lumi.ratio("engine", "timm") is None
    table = speed.step_table([result, lumi]).splitlines()
    assert table[2] == "| t→s | kd | 4 | 90.0 [80.0–95.0] | 100.0 [99.0–101.0] | 60.0 [50.0–70.0] | 0.900 | 1.500 |"
    assert table[3].endswith("| — | 1.250 | — |")
    loader = speed.loader_table(180.0, [result, lumi], label="x").splitlines()
    assert loader[2].endswith("| 90.0 | 180 | 2.000 |") and loader[3].endswith("| 50.0 | 180 | 3.600 |")


def test_loader_throughput_is_positive(tmp_path):
    cfg = DataConfig("digits", transform="cifar", image_size=8, num_workers=0, cache_dir=str(tmp_path))
    assert steps.loader_throughput(cfg, batch_size=16, batches=3, warmup=1) > 0


# ----------------------------------------------------------------------------- accuracy aggregation

FAKE_TOP1 = {  # method -> top-1 per seed (last epoch); curves are [top1 - 10, top1]
    "none": [80.0, 82.0, 81.0],
    "kd": [83.0, 84.0, 85.5],
    "luminet": [84.0, 86.0, 85.0],
}


def _fake_run(run_dir: Path, method: str, seed: int, top1: float) -> Path:
    """A finished run folder as the engine writes it: recipe.yaml, summary.json, metrics.jsonl."""
    recipe = load_recipe(BENCH_RECIPES / f"{method}.yaml", [f"train.seed={seed}"])
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe)))
    last = {"epoch": 2, "step": 10, "top1": top1, "top5": 99.0, "nll": 0.5, "ece": top1 / 20, "samples": 100}
    (run_dir / "summary.json").write_text(json.dumps({"report": "last", "best": last, "last": last}))
    records = [{"epoch": 2, "top1": top1}, {"epoch": 1, "top1": top1 - 10}]  # out of order on purpose
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / accuracy.WALL_TIME_FILE).write_text(json.dumps({"train_s": 10.0 * (seed + 1)}))
    return run_dir


@pytest.fixture
def fake_runs(tmp_path):
    return {
        method: [_fake_run(accuracy.student_run_dir(tmp_path, method, seed), method, seed, top1)
                 for seed, top1 in enumerate(values)]
        for method, values in FAKE_TOP1.items()
    }


def test_summarise_methods_mean_std_and_deltas(fake_runs):
    results = {r.method: r for r in accuracy.summarise_methods(fake_runs)}
    assert list(results) == ["none", "kd", "luminet"]
    mean = {m: sum(v) / len(v) for m, v in FAKE_TOP1.items()}
    for method, values in FAKE_TOP1.items():
        r = results[method]
        assert r.n == 3
        assert r.top1_mean == pytest.approx(mean[method])
        assert r.top1_std == pytest.approx(math.sqrt(sum((v - mean[method]) ** 2 for v in values) / 2))
        assert r.ece_mean == pytest.approx(mean[method] / 20)
        assert r.curve_top1 == pytest.approx([mean[method] - 10, mean[method]])
        assert r.train_s == pytest.approx(20.0)
    assert results["luminet"].delta_kd == pytest.approx(mean["luminet"] - mean["kd"])
    assert results["luminet"].delta_none == pytest.approx(mean["luminet"] - mean["none"])
    assert results["kd"].delta_none == pytest.approx(mean["kd"] - mean["none"])
    assert results["kd"].delta_kd is None and results["none"].delta_none is None


def test_results_table_rows(fake_runs):
    table = accuracy.results_table(accuracy.summarise_methods(fake_runs)).splitlines()
    assert table[0] == "| method | n | top-1 (%) | Δ vs KD | Δ vs none | ECE (%) | train s/run |"
    assert table[4] == "| luminet | 3 | 85.00 ± 1.00 | +0.83 | +4.00 | 4.25 ± 0.05 | 20 |"


def test_mean_curve_refuses_unequal_lengths():
    assert accuracy.mean_curve([[1.0, 2.0], [3.0, 6.0]]) == [2.0, 4.0]
    with pytest.raises(ValueError, match="different lengths"):
        accuracy.mean_curve([[1.0, 2.0], [1.0]])


def test_summarise_refuses_a_method_whose_runs_differ(fake_runs, tmp_path):
    odd = _fake_run(tmp_path / "odd", "kd", 7, 50.0)
    raw = yaml.safe_load((odd / "recipe.yaml").read_text())
    raw["optim"]["lr"] = 0.5
    (odd / "recipe.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="'kd' runs differ in more than the seed"):
        accuracy.summarise_methods({**fake_runs, "kd": [*fake_runs["kd"], odd]})


def test_train_or_reuse_returns_the_recorded_time_without_training(fake_runs):
    run_dir = fake_runs["kd"][1]
    before = (run_dir / "summary.json").read_text()
    assert accuracy.train_or_reuse(BENCH_RECIPES / "kd.yaml", run_dir) == 20.0
    assert (run_dir / "summary.json").read_text() == before


# ----------------------------------------------------------------------------- reports and plots


def test_markdown_table_aligns_numbers_and_checks_widths():
    table = markdown_table(["name", "a", "b"], [["x", 1, 2.5]])
    assert table == "| name | a | b |\n| --- | ---: | ---: |\n| x | 1 | 2.5 |\n"
    with pytest.raises(ValueError, match="has 2 cells but the header has 3"):
        markdown_table(["name", "a", "b"], [["x", 1]])


def test_write_outputs_round_trips_and_refuses_nan(tmp_path):
    data = {"x": [1, 2.5], "machine": machine_info()}
    json_path, md_path = write_outputs(tmp_path / "out", "speed", data, "# hi\n")
    assert json.loads(json_path.read_text()) == data
    assert md_path.read_text() == "# hi\n"
    assert data["machine"]["nproc"] >= 1 and data["machine"]["torch"] == torch.__version__
    with pytest.raises(ValueError):
        write_outputs(tmp_path, "bad", {"x": float("nan")}, "")


def test_plots_write_small_pngs(tmp_path):
    bars = plots.bar_chart(["none", "kd"], {"top-1": ([80.0, 82.0], [1.0, None]), "ECE": ([3.0, 2.0], [0.5, 0.2])},
                           tmp_path / "bars.png", title="t")
    curves = plots.learning_curves({"none": [70.0, 80.0], "kd": [72.0, 82.0]}, tmp_path / "curves.png", ylabel="top-1")
    for path in (bars, curves):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
