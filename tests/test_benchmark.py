"""vitkd.benchmark: timing helpers, step runners, accuracy aggregation, reports and plots (tiny sizes;
no assertion is about how fast anything is)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from vitkd.benchmark import accuracy, plots, speed, steps, timing
from vitkd.benchmark.report import machine_info, markdown_table, write_outputs
from vitkd.data import DataConfig
from vitkd.engine.trainer import make_accelerator
from vitkd.losses import available_losses
from vitkd.recipe import TrainConfig, load_recipe

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
    torch.manual_seed(0)  # bench kd recipe: cifar_resnet20 -> cifar_resnet8, 28 px, 1 channel
    return steps.load_workload(BENCH_RECIPES / "kd.yaml", num_classes=10, batch_size=4, steps=2,
                               device=torch.device("cpu"))


def test_workload_batches_follow_the_recipe(kd_workload):
    images, labels = kd_workload.batches[0]
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,) and labels.dtype == torch.int64
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
    assert table[2] == ("| t→s | kd | 4 | 90.0 [80.0–95.0] | 100.0 [99.0–101.0] | 60.0 [50.0–70.0] | 0.900 | 1.500 "
                        "| — | — | — |")
    assert table[3].endswith("| — | 1.250 | — | — | — | — |")
    loader = speed.loader_table(180.0, [result, lumi], label="x").splitlines()
    assert loader[2].endswith("| 90.0 | 180 | 2.000 |") and loader[3].endswith("| 50.0 | 180 | 3.600 |")


def test_mfu_is_achieved_model_flops_over_the_peak():
    rate = timing.Spread(2000.0, 1900.0, 2100.0, 3)
    result = speed.StepResult("t→s", "kd", 4, {"engine": rate}, flops_per_image=3e9)
    assert result.tflops() == pytest.approx(6.0)  # 3 GFLOP × 2000 img/s
    assert speed.step_table([result], peak_tflops=60.0).splitlines()[2].endswith("| 3.00 | 6 | 10.0 % |")


def test_step_flops_are_teacher_forward_plus_student_forward_and_backward(kd_workload):
    from torch.utils.flop_counter import FlopCounterMode

    from vitkd.engine.build import build_student, build_teacher

    images = kd_workload.batches[0][0]

    def forward_flops(model) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(images)
        return counter.get_total_flops()

    teacher = forward_flops(build_teacher(kd_workload.recipe.teachers, kd_workload.info))
    student = forward_flops(build_student(kd_workload.recipe.student, kd_workload.info))
    total = steps.step_flops(kd_workload, torch.device("cpu")) * len(images)
    # backward ≈ 2 × forward (gradients for inputs and weights), less the first layer's input gradient
    assert teacher + 2.5 * student < total <= teacher + 3 * student


def test_loader_throughput_is_positive(tmp_path):
    cfg = DataConfig("digits", transform="cifar", image_size=8, num_workers=0, cache_dir=str(tmp_path))
    assert steps.loader_throughput(cfg, batch_size=16, batches=3, warmup=1) > 0


# ----------------------------------------------------------------------------- accuracy statistics


def test_paired_comparison_matches_the_t_interval_and_scipy():
    from scipy import stats

    values, reference = [81.0, 83.5, 80.2, 82.9, 84.1], [80.0, 82.0, 80.5, 81.0, 82.6]
    diffs = [a - b for a, b in zip(values, reference, strict=True)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t quantile 0.975 with 4 degrees of freedom (tables)
    c = accuracy.paired_comparison(values, reference, "kd")
    assert (c.reference, c.n) == ("kd", 5)
    assert (c.mean, c.ci_low, c.ci_high) == pytest.approx((mean, mean - half, mean + half))
    assert c.p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    assert c.p_holm is None
    # a zero spread gives a zero-width interval instead of a division by zero
    same = accuracy.paired_comparison([1.0, 2.0], [0.0, 1.0], "none")
    assert (same.mean, same.ci_low, same.ci_high, same.p) == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="≥ 2 pairs"):
        accuracy.paired_comparison([1.0, 2.0], [1.0], "kd")


def _holm_rejections(p_values, alpha):
    """Holm's step-down test as stated: reject the smallest p while p_(k) <= alpha / (m - k), stop at the first
    that fails."""
    rejected = set()
    for k, i in enumerate(sorted(range(len(p_values)), key=lambda i: p_values[i])):
        if p_values[i] > alpha / (len(p_values) - k):
            break
        rejected.add(i)
    return rejected


@pytest.mark.parametrize("p_values", [[0.01, 0.04, 0.03, 0.005], [0.2, 0.001, 0.5, 0.02, 0.02, 0.9], [0.7]])
def test_holm_adjusted_p_reject_exactly_what_the_step_down_test_rejects(p_values):
    adjusted = accuracy.holm(p_values)
    assert all(p <= a <= 1.0 for p, a in zip(p_values, adjusted, strict=True))
    for alpha in (0.001, 0.01, 0.02, 0.04, 0.05, 0.1, 0.5):
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_rejections(p_values, alpha), alpha
    if p_values == [0.01, 0.04, 0.03, 0.005]:  # by hand: 4·0.005, 3·0.01, max(2·0.03, ·), max(1·0.04, 0.06)
        assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_reliability_bins_give_the_engines_ece():
    from vitkd.engine.metrics import ECE_BINS, summarise

    generator = torch.Generator().manual_seed(0)
    confidence = torch.rand(500, generator=generator) * 0.9 + 0.1
    correct = (torch.rand(500, generator=generator) < confidence ** 2).float()
    stats = torch.stack([correct, correct, torch.zeros(500), confidence], dim=1)
    bins = accuracy.reliability_bins(correct.tolist(), confidence.tolist(), ECE_BINS)
    assert sum(b["count"] for b in bins) == 500 and len(bins) == ECE_BINS
    ece = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / 500
    assert 100 * ece == pytest.approx(summarise(stats)["ece"])


def test_select_point_takes_the_best_and_the_first_of_ties():
    assert accuracy.select_point([80.0, 82.0, 81.0]) == 1
    assert accuracy.select_point([82.0, 80.0, 82.0]) == 0


def test_bench_methods_are_the_registered_losses_with_a_bench_recipe(tmp_path):
    assert accuracy.bench_methods(BENCH_RECIPES)[:2] == ["none", "kd"]
    assert set(accuracy.bench_methods(BENCH_RECIPES)) == {"none", *available_losses()} & {
        p.stem for p in BENCH_RECIPES.glob("*.yaml")}
    for name in ("none", "luminet", "kd", "not_a_loss"):
        (tmp_path / f"{name}.yaml").write_text("")
    assert accuracy.bench_methods(tmp_path) == ["none", "kd", "luminet"]
    with pytest.raises(FileNotFoundError, match="none.yaml is missing"):
        accuracy.bench_methods(tmp_path / "absent")


def test_grid_points_are_the_product_and_every_method_needs_one(tmp_path):
    points = accuracy.grid_points(BENCH_RECIPES / accuracy.GRID_FILE, accuracy.bench_methods(BENCH_RECIPES))
    assert {len(p) for p in points.values()} == {4}  # the same budget for every method
    assert points["kd"][1] == {"optim.lr": 0.05, "distill.kd_weight": 0.225}
    for method, method_points in points.items():  # every point is a valid override of the method's recipe
        for point in method_points:
            load_recipe(BENCH_RECIPES / f"{method}.yaml", accuracy.overrides_of(point))
    grid = tmp_path / "grid.yaml"
    grid.write_text("none: {optim.lr: [0.1]}\n")
    with pytest.raises(ValueError, match=r"no grid for \['kd'\]"):
        accuracy.grid_points(grid, ["none", "kd"])
    grid.write_text("none: {optim.lr: []}\n")
    with pytest.raises(ValueError, match="non-empty lists"):
        accuracy.grid_points(grid, ["none"])


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    """The real script on digits at 8 px: none and KD (plus timm's KD), two grid points for KD, two test
    seeds, one update per run."""
    import runpy

    root = tmp_path_factory.mktemp("bench_accuracy")
    recipes = root / "recipes"
    recipes.mkdir()
    for name in ("_base", "teacher", "none", "kd"):
        (recipes / f"{name}.yaml").write_text((BENCH_RECIPES / f"{name}.yaml").read_text())
    (recipes / "grid.yaml").write_text("none: {optim.lr: [0.05]}\nkd: {distill.kd_weight: [0.9, 0.225]}\n")
    argv = ["bench_accuracy.py", "--out", str(root / "out"), "--recipes", str(recipes), "--source", "digits",
            "--val-size", "100", "--train-fraction", "0.2", "--teacher-fraction", "0.2", "--test-samples", "60",
            "--seeds", "0", "1", "--set", "train.epochs=1", "--set", "train.max_steps=1",
            "--set", "data.image_size=8"]
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "bench_accuracy.py")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", argv)
        runpy.run_path(script, run_name="__main__")
        first = json.loads((root / "out" / "accuracy.json").read_text())
        stamps = {p: p.stat().st_mtime_ns for p in (root / "out" / "runs").rglob("summary.json")}
        mp.setattr("sys.argv", [*argv, "--report-only"])
        runpy.run_path(script, run_name="__main__")
    return root / "out", first, stamps


def test_pipeline_json_has_settings_seeds_and_corrected_comparisons(tiny_benchmark):
    out, data, _ = tiny_benchmark
    methods = data["methods"]
    assert list(methods) == ["none", "kd", accuracy.TIMM_KD]
    assert data["setting"]["seeds"] == [0, 1] and data["setting"]["test_images"] == 60
    assert [p["point"] for p in methods["kd"]["grid"]] == [{"distill.kd_weight": 0.9}, {"distill.kd_weight": 0.225}]
    best = max(methods["kd"]["grid"], key=lambda p: p["val_top1"])
    assert methods["kd"]["chosen"] == best["point"] == methods[accuracy.TIMM_KD]["chosen"]
    for name, m in methods.items():
        assert m["seeds"] == [0, 1] and len(m["top1"]) == len(m["ece"]) == len(m["nll"]) == 2
        assert m["top1_ci"][0] <= m["top1_mean"] <= m["top1_ci"][1]
        assert set(m["comparisons"]) == {"kd", "none"} - {name}
        for c in m["comparisons"].values():
            assert c["n"] == 2 and c["ci_low"] <= c["mean"] <= c["ci_high"] and c["p"] <= c["p_holm"] <= 1
    kd_vs_none = methods["kd"]["comparisons"]["none"]["mean"]
    assert kd_vs_none == pytest.approx(-methods["none"]["comparisons"]["kd"]["mean"])
    assert set(data["reliability"]) and all(len(b) == 15 for b in data["reliability"].values())
    for name in ("accuracy.md", "accuracy_top1.png", "accuracy_paired.png", "accuracy_reliability.png"):
        assert (out / name).is_file(), name


def test_pipeline_reuses_finished_runs(tiny_benchmark):
    out, first, stamps = tiny_benchmark
    assert len(stamps) == 1 + 3 + 3 * 2  # teacher, the grid, the test seeds
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")} == stamps
    assert json.loads((out / "accuracy.json").read_text())["methods"] == first["methods"]


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
    intervals = plots.interval_panels({"a": {"none": (80.0, 79.0, 81.0), "kd": (82.0, 81.5, 82.5)},
                                       "b": {"kd": (1.0, -0.5, 2.5)}}, tmp_path / "ci.png", xlabel="x", zero_line=True)
    bins = accuracy.reliability_bins([1.0, 0.0, 1.0], [0.95, 0.5, 0.55], 15)
    reliability = plots.reliability_diagrams({"teacher": bins, "kd": bins}, tmp_path / "rel.png", title="t")
    for path in (intervals, reliability):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
