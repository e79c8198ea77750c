"""The speed benchmark's comparisons and tables: training step images/s per implementation, and the
data loader against the step.

Images/s of a pass = images in the pass / its seconds; the tables give the median over interleaved
repetitions and the interquartile range. Ratios are of the medians.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

from vitkd.benchmark.report import markdown_table
from vitkd.benchmark.steps import IMPLEMENTATIONS, load_workload, step_flops, step_runners
from vitkd.benchmark.timing import Spread, interleave, spread

__all__ = ["StepResult", "compare_steps", "loader_table", "step_table"]


@dataclass
class StepResult:
    """Images/s of each implementation (``images_per_s[impl]``) of one recipe's training step."""

    pair: str
    method: str
    batch_size: int
    images_per_s: dict[str, Spread]
    flops_per_image: float | None = None  # teacher forward + student forward and backward (step_flops)

    def tflops(self, impl: str = "engine") -> float | None:
        """Achieved model TFLOP/s of ``impl`` at its median images/s."""
        if self.flops_per_image is None or impl not in self.images_per_s:
            return None
        return self.flops_per_image * self.images_per_s[impl].median / 1e12

    def ratio(self, numerator: str, denominator: str) -> float | None:
        """Median images/s of ``numerator`` over ``denominator``; None if one was not measured."""
        if numerator not in self.images_per_s or denominator not in self.images_per_s:
            return None
        return self.images_per_s[numerator].median / self.images_per_s[denominator].median


def compare_steps(
    pair: str,
    recipes: Mapping[str, str | Path],
    accelerator: Accelerator,
    run_dir: Path,
    *,
    num_classes: int,
    batch_size: int,
    steps: int,
    reps: int,
    warmup: int,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
) -> list[StepResult]:
    """Time every implementation of every ``recipes[method]`` step of one teacher → student pair, all
    interleaved together: ``warmup`` + ``reps`` passes of ``steps`` batches each; with the FLOPs per image
    of each step's model work."""
    cases, images, flops = {}, {}, {}
    for method, path in recipes.items():
        workload = load_workload(path, num_classes=num_classes, batch_size=batch_size, steps=steps,
                                 device=accelerator.device)
        flops[method] = step_flops(workload, accelerator.device)
        for impl, runner in step_runners(workload, accelerator, run_dir, implementations).items():
            cases[(method, impl)] = runner.seconds
            images[(method, impl)] = workload.images_per_pass
    seconds = interleave(cases, reps=reps, warmup=warmup)
    results = []
    for method in recipes:
        rates = {impl: _rate(images[(m, impl)], seconds[(m, impl)]) for m, impl in seconds if m == method}
        results.append(StepResult(pair, method, batch_size, rates, flops[method]))
    return results


def _rate(images: int, seconds: Sequence[float]) -> Spread:
    """Images/s of each pass, summarised (the median pass time gives the median rate)."""
    return spread([images / s for s in seconds])


def step_table(results: Sequence[StepResult], peak_tflops: float | None = None) -> str:
    """Markdown: images/s per implementation (median [q1–q3]), the engine's ratios, GFLOP per image, the
    engine's achieved TFLOP/s and, given the device's dense peak ``peak_tflops``, its MFU (model FLOPs
    utilisation: achieved / peak)."""
    header = ["pair", "loss", "batch", *(f"{impl} img/s" for impl in IMPLEMENTATIONS), "engine/plain", "engine/timm",
              "GFLOP/img", "engine TFLOP/s", "engine MFU"]
    rows = []
    for r in results:
        rates = [_cell(r.images_per_s.get(impl)) for impl in IMPLEMENTATIONS]
        ratios = [_ratio(r.ratio("engine", other)) for other in ("plain", "timm")]
        achieved = r.tflops()
        gflops = "—" if r.flops_per_image is None else f"{r.flops_per_image / 1e9:.2f}"
        mfu = "—" if achieved is None or not peak_tflops else f"{100 * achieved / peak_tflops:.1f} %"
        rows.append([r.pair, r.method, r.batch_size, *rates, *ratios, gflops,
                     "—" if achieved is None else f"{achieved:.3g}", mfu])
    return markdown_table(header, rows, numeric_from=2)


def loader_table(loader_images_per_s: float, results: Sequence[StepResult], *, label: str) -> str:
    """Markdown: the loader's images/s against each engine step's; loader/step > 1: the loader keeps up."""
    rows = [
        [r.pair, r.method, f"{r.images_per_s['engine'].median:.1f}", f"{loader_images_per_s:.0f}",
         _ratio(loader_images_per_s / r.images_per_s["engine"].median)]
        for r in results
        if "engine" in r.images_per_s
    ]
    header = ["pair", "loss", "engine step img/s", f"loader img/s ({label})", "loader/step"]
    return markdown_table(header, rows, numeric_from=2)


def _cell(rate: Spread | None) -> str:
    return "—" if rate is None else f"{rate.median:.1f} [{rate.q1:.1f}–{rate.q3:.1f}]"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
