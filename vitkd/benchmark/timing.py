"""Interleaved timing: every case runs once per repetition, in alternating order, after a warm-up.

Interleaving spreads slow drifts of a shared machine (other jobs, frequency changes) over all cases
alike, and the median ignores the odd disturbed repetition. Also the loss benchmark
(``scripts/bench_losses.py``): forward + backward of every ``vitkd.losses`` loss.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from vitkd.benchmark.report import markdown_table
from vitkd.losses import DistillationLoss, available_losses, build_loss

__all__ = [
    "LOSS_BASELINE",
    "LOSS_SHAPES",
    "Spread",
    "device_sync",
    "interleave",
    "loss_inputs",
    "loss_table",
    "loss_timings",
    "spread",
    "time_loss_step",
]

LOSS_SHAPES = ((64, 100), (256, 1000), (1024, 1000))  # (batch, classes)
LOSS_BASELINE = "kd"


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of ``n`` samples (quartiles equal the median for a single sample)."""

    median: float
    q1: float
    q3: float
    n: int

    def scaled(self, factor: float) -> Spread:
        """The same samples multiplied by ``factor`` > 0 (e.g. seconds → milliseconds)."""
        return Spread(self.median * factor, self.q1 * factor, self.q3 * factor, self.n)


def spread(samples: Sequence[float]) -> Spread:
    """Median and quartiles (``statistics.quantiles``, inclusive method) of ``samples``."""
    if not samples:
        raise ValueError("spread() needs at least one sample")
    if len(samples) == 1:
        return Spread(samples[0], samples[0], samples[0], 1)
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Spread(median, q1, q3, len(samples))


def interleave(cases: Mapping[str, Callable[[], float]], *, reps: int, warmup: int) -> dict[str, list[float]]:
    """Call every case once per repetition — in the given order on even repetitions, reversed on odd
    ones — and collect what each returns (its own measurement, e.g. seconds) after ``warmup``
    untimed repetitions. Returns ``{case: [reps values]}``."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"interleave needs reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        for name in names if rep % 2 == 0 else reversed(names):
            value = cases[name]()
            if rep >= warmup:
                samples[name].append(value)
    return samples


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for queued work on ``device`` before a clock is read (nothing on CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def loss_inputs(loss: DistillationLoss, batch: int, classes: int, device: torch.device) -> list[torch.Tensor]:
    """Student views (requiring grad), teacher views, then labels if the loss takes them; (batch, classes)."""
    students = [torch.randn(batch, classes, device=device, requires_grad=True) for _ in range(loss.num_views)]
    teachers = [3 * torch.randn(batch, classes, device=device) for _ in range(loss.num_views)]
    labels = [torch.randint(classes, (batch,), device=device)] if loss.requires_target else []
    return students + teachers + labels


def time_loss_step(loss: DistillationLoss, inputs: list[torch.Tensor], sync: Callable[[], None]) -> float:
    """Seconds for one ``loss(*inputs).backward()``."""
    for tensor in inputs:
        tensor.grad = None
    sync()
    start = time.perf_counter()
    loss(*inputs).backward()
    sync()
    return time.perf_counter() - start


def loss_timings(batch: int, classes: int, *, reps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds of forward + backward per registered loss (default hyperparameters) at one
    (batch, classes) shape, interleaved; each loss gets its own inputs as the engine would call it."""
    sync = device_sync(device)
    losses = {name: build_loss(name) for name in available_losses()}
    inputs = {name: loss_inputs(loss, batch, classes, device) for name, loss in losses.items()}
    cases = {name: (lambda n=name: time_loss_step(losses[n], inputs[n], sync)) for name in losses}
    samples = interleave(cases, reps=reps, warmup=warmup)
    return {name: 1e3 * statistics.median(values) for name, values in samples.items()}


def loss_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """``results[shape label][loss] = ms`` → Markdown with ms and the ratio to KD per shape."""
    shapes = list(results)
    header = ["loss", *(h for s in shapes for h in (f"{s} ms", f"{s} ×{LOSS_BASELINE}"))]
    rows = [
        [name, *(c for s in shapes for c in (f"{results[s][name]:.3f}", f"{results[s][name] / results[s][LOSS_BASELINE]:.2f}"))]
        for name in results[shapes[0]]
    ]
    return markdown_table(header, rows)
