"""Speed of vitkd against plain PyTorch and timm: losses, training steps, and the data loader.

    python scripts/bench_speed.py --out bench/speed [--device cuda] [--bf16] [--steps 2] [--reps 5]

Writes OUT/speed.json and OUT/speed.md with three tables:

1. forward + backward of every vitkd loss relative to KD at (64, 100), (256, 1000), (1024, 1000);
2. images/s of one distillation training step (teacher forward without gradients, student forward
   and backward, SGD/AdamW step) of the paper recipes resnet56→resnet20, resnet32x4→resnet8x4 and
   DeiT-S→DeiT-nano at 32 px, three ways: vitkd's engine loop, a hand-written PyTorch step, timm's
   LogitDistillationTask (KD only) — see vitkd.benchmark.steps for exactly what is timed — with the
   model GFLOP per image, the engine's TFLOP/s and (``--peak-tflops``) its MFU. On a GPU add the
   ImageNet pair: ``--device cuda --bf16 --pairs deit_s→deit_tiny@224 --batch-size 128 --steps 20
   --peak-tflops 989`` (H100 SXM bf16 dense peak);
3. the training loader's images/s (Fashion-MNIST at 32 px, ``cifar`` transform) against the step's;
4. a teacher-logit cache: epoch time live, cached and with no teacher, the write cost and break-even
   (resnet32x4→resnet8x4 and DeiT-S→deit_nano at 32 px; see vitkd.benchmark.cache_speed).

``--sections cache`` (or any subset of losses/steps/loader/cache) runs only those tables.

The default sizes take a few minutes on 2 CPU cores; raise --steps/--reps for tighter numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator

from vitkd.benchmark import speed, steps, timing
from vitkd.benchmark.cache_speed import cache_speed
from vitkd.benchmark.report import machine_info, markdown_table, write_outputs
from vitkd.data import DataConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TABLES = RECIPES / "cifar100"
PAIRS = {  # pair -> {loss: recipe}; the recipes' teachers and students, losses, weights and optimisers
    "resnet56→resnet20": {m: TABLES / f"table1/resnet56-resnet20_{m}.yaml" for m in ("kd", "luminet")},
    "resnet32x4→resnet8x4": {m: TABLES / f"table1/resnet32x4-resnet8x4_{m}.yaml" for m in ("kd", "luminet")},
    "deit_s→deit_nano": {m: TABLES / f"table6/deit_s-deit_nano_{m}.yaml" for m in ("kd", "luminet")},
    # ImageNet at 224 px, GPU-sized (DeiT-S ≈ 18 img/s forward on 2 CPU cores): not in the default --pairs
    "deit_s→deit_tiny@224": {"luminet": RECIPES / "deit_s_to_tiny.yaml"},
}
CPU_PAIRS = ["resnet56→resnet20", "resnet32x4→resnet8x4", "deit_s→deit_nano"]
NUM_CLASSES = {"deit_s→deit_tiny@224": 1000}  # ImageNet-1k; the others: CIFAR-100, the recipes' dataset


SECTIONS = ("losses", "steps", "loader", "cache")
CACHE_PAIRS = {  # pair -> KD recipe: the cache section's live / cached / no-teacher runs
    "resnet32x4→resnet8x4": TABLES / "table1/resnet32x4-resnet8x4_kd.yaml",
    "deit_s→deit_nano": TABLES / "table6/deit_s-deit_nano_kd.yaml",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for speed.json and speed.md")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the training steps")
    parser.add_argument("--pairs", nargs="+", default=CPU_PAIRS, choices=list(PAIRS))
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak TFLOP/s at the precision used "
                        "(e.g. 989 for an H100 SXM in bf16), for the MFU column")
    parser.add_argument("--batch-size", type=int, default=64, help="training-step batch (all pairs)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed pass")
    parser.add_argument("--reps", type=int, default=5, help="timed passes per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--loss-reps", type=int, default=30, help="timed repetitions per loss and shape")
    parser.add_argument("--loader-batches", type=int, default=100, help="timed loader batches")
    parser.add_argument("--cache-per-class", type=int, default=10, help="cache section: images per class (100 classes)")
    parser.add_argument("--cache-reps", type=int, default=2, help="cache section: interleaved repetitions")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    machine = machine_info()
    precision = "bf16 autocast" if args.bf16 else "fp32"
    data = {"machine": machine, "device": str(device), "precision": precision,
            "settings": vars(args) | {"out": str(args.out)}}
    parts = [f"## Speed ({device.type}, {precision})\n",
             f"Machine: {machine['nproc']} × {machine['cpu_model']}, torch {machine['torch']} "
             f"({machine['torch_threads']} threads); load average at the start {machine['load_average']} (1/5/15 min).\n"]
    if "losses" in args.sections:
        data["losses_ms"] = {f"{b}×{c}": timing.loss_timings(b, c, reps=args.loss_reps, warmup=5, device=device)
                             for b, c in timing.LOSS_SHAPES}
        parts += [f"### Losses: forward + backward, median of {args.loss_reps} interleaved repetitions\n",
                  timing.loss_table(data["losses_ms"])]
    results = []
    if "steps" in args.sections or "loader" in args.sections:
        accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if args.bf16 else "no")
        with tempfile.TemporaryDirectory() as run_dir:
            for pair in args.pairs:
                results += speed.compare_steps(pair, PAIRS[pair], accelerator, Path(run_dir),
                                               num_classes=NUM_CLASSES.get(pair, 100), batch_size=args.batch_size,
                                               steps=args.steps, reps=args.reps, warmup=args.warmup)
        data["steps"] = [dataclasses.asdict(r) for r in results]
        parts += [
            f"### Training step: images/s, median [interquartile range] of {args.reps} interleaved passes of "
            f"{args.steps} steps (after {args.warmup} warm-up pass)\n",
            "engine = vitkd's `Trainer.train_epoch` (DistillationTask under accelerator.accumulate/autocast/"
            "backward, loss bookkeeping, log lines) over an Accelerate-prepared loader; plain = hand-written "
            "PyTorch step; timm = `timm.task.LogitDistillationTask` (KD only). Same recipe, batches, initial "
            "weights and optimiser for all; random-weight teachers.\n",
            speed.step_table(results, args.peak_tflops),
        ]
    if "loader" in args.sections:
        loader_cfg = DataConfig("fashion_mnist", transform="cifar", image_size=32, num_workers=2)
        data["loader_images_per_s"] = steps.loader_throughput(loader_cfg, batch_size=args.batch_size,
                                                              batches=args.loader_batches, warmup=10)
        parts += [f"### Data loader vs training step (batch {args.batch_size})\n",
                  speed.loader_table(data["loader_images_per_s"], results,
                                     label="Fashion-MNIST 32 px, cifar transform, 2 workers")]
    if "cache" in args.sections:
        with tempfile.TemporaryDirectory() as root:
            data["cache"] = {pair: cache_speed(recipe, Path(root) / str(i), per_class=args.cache_per_class,
                                               reps=args.cache_reps)
                             for i, (pair, recipe) in enumerate(CACHE_PAIRS.items())}
        parts += [f"### Teacher-logit cache: one epoch of {100 * args.cache_per_class} synthetic images, "
                  f"100 classes, KD, median of {args.cache_reps} interleaved repetitions\n",
                  "Training time of the engine's epoch (`train_time_s`, evaluation excluded): live teacher, "
                  "float32 cache (`teacher.cache`), and the student alone (`method: none`, the floor); write = "
                  "`cache_teacher` for that epoch; break-even = cached runs after which the write has paid off.\n",
                  cache_table(data["cache"])]
    machine_end = machine_info()["load_average"]
    parts.append(f"Load average at the end: {machine_end} (1/5/15 min).\n")
    data["load_average_end"] = machine_end
    markdown = "\n".join(parts)
    write_outputs(args.out, "speed", data, markdown)
    print(markdown)


def cache_table(results: dict[str, dict]) -> str:
    """Markdown table of :func:`vitkd.benchmark.cache_speed.cache_speed` results, one row per pair."""
    header = ["pair", "live (s)", "cached (s)", "no teacher (s)", "cached / no teacher", "cached / live",
              "write (s)", "break-even (runs)", "bytes / sample / epoch"]
    rows = [[pair, f"{r['live_s']:.1f}", f"{r['cached_s']:.1f}", f"{r['no_teacher_s']:.1f}",
             f"{r['cached_over_no_teacher']:.2f}", f"{r['cached_over_live']:.2f}", f"{r['write_s']:.1f}",
             f"{r['break_even_runs']:.1f}", f"{r['bytes_per_sample_epoch']:.0f}"] for pair, r in results.items()]
    return markdown_table(header, rows)


if __name__ == "__main__":
    main()
