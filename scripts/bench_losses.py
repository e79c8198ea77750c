"""Forward + backward time of every vitkd loss, absolute and relative to KDLoss.

    python scripts/bench_losses.py [--reps 100] [--device cuda] [--threads 1] [--json results.json]

Prints a Markdown table: median milliseconds of one ``loss(...).backward()`` per (batch, classes)
shape, and the ratio to KD's median. Timings are interleaved (every repetition runs every loss, in
alternating order) after a warm-up, so slow drifts of the machine hit all losses alike. Each loss runs
on its own inputs as the training engine would call it (two views for CRLD, labels for DKD).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from vitkd.losses import DistillationLoss, available_losses, build_loss

SHAPES = [(64, 100), (256, 1000), (1024, 1000)]
BASELINE = "kd"


def make_inputs(loss: DistillationLoss, batch: int, classes: int, device: torch.device) -> list[torch.Tensor]:
    """Student views (requiring grad), teacher views, then labels if the loss takes them."""
    students = [torch.randn(batch, classes, device=device, requires_grad=True) for _ in range(loss.num_views)]
    teachers = [3 * torch.randn(batch, classes, device=device) for _ in range(loss.num_views)]
    labels = [torch.randint(classes, (batch,), device=device)] if loss.requires_target else []
    return students + teachers + labels


def time_step(loss: DistillationLoss, inputs: list[torch.Tensor], sync: Callable[[], None]) -> float:
    """Seconds for one forward + backward."""
    for tensor in inputs:
        tensor.grad = None
    sync()
    start = time.perf_counter()
    loss(*inputs).backward()
    sync()
    return time.perf_counter() - start


def bench_shape(batch: int, classes: int, reps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds per loss name at one shape."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = available_losses()
    losses = {name: build_loss(name) for name in names}
    inputs = {name: make_inputs(losses[name], batch, classes, device) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        for name in names if rep % 2 == 0 else reversed(names):
            seconds = time_step(losses[name], inputs[name], sync)
            if rep >= warmup:
                times[name].append(seconds)
    return {name: 1e3 * statistics.median(samples) for name, samples in times.items()}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """results[shape label][loss name] = ms -> Markdown table with ms and ×KD per shape."""
    shapes = list(results)
    header = "| loss | " + " | ".join(f"{s} ms | {s} ×{BASELINE}" for s in shapes) + " |"
    rule = "|---|" + "---:|---:|" * len(shapes)
    rows = []
    for name in results[shapes[0]]:
        cells = [f"{results[s][name]:.3f} | {results[s][name] / results[s][BASELINE]:.2f}" for s in shapes]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=100, help="timed repetitions per loss and shape")
    parser.add_argument("--warmup", type=int, default=10, help="untimed repetitions first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the results (ms) as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    results = {f"{b}×{c}": bench_shape(b, c, args.reps, args.warmup, device) for b, c in SHAPES}
    detail = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(f"forward+backward, median of {args.reps} interleaved runs")
    print(f"{device.type} ({detail}), torch {torch.__version__}\n")
    print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "detail": detail, "reps": args.reps, "ms": results}, f, indent=2
            )


if __name__ == "__main__":
    main()
