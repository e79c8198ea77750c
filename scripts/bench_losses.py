"""Forward + backward time of every vitkd loss, absolute and relative to KDLoss.

    python scripts/bench_losses.py [--reps 100] [--device cuda] [--threads 1] [--json results.json]

Prints a Markdown table: median milliseconds of one ``loss(...).backward()`` per (batch, classes)
shape, and the ratio to KD's median. Timings are interleaved (every repetition runs every loss, in
alternating order) after a warm-up, so slow drifts of the machine hit all losses alike. Each loss runs
on its own inputs as the training engine would call it (two views for CRLD, labels for DKD). The
timing logic lives in :mod:`vitkd.benchmark.timing` (shared with ``scripts/bench_speed.py``).
"""

from __future__ import annotations

import argparse
import json

import torch

from vitkd.benchmark.timing import LOSS_SHAPES, loss_table, loss_timings


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
    results = {
        f"{b}×{c}": loss_timings(b, c, reps=args.reps, warmup=args.warmup, device=device) for b, c in LOSS_SHAPES
    }
    detail = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(f"forward+backward, median of {args.reps} interleaved runs")
    print(f"{device.type} ({detail}), torch {torch.__version__}\n")
    print(loss_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "detail": detail, "reps": args.reps, "ms": results}, f, indent=2
            )


if __name__ == "__main__":
    main()
