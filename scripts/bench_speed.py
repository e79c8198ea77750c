"""Speed of vitkd against plain PyTorch and timm: losses, training steps, and the data loader.

    python scripts/bench_speed.py --out bench/speed [--device cuda] [--bf16] [--steps 2] [--reps 5]

Writes OUT/speed.json and OUT/speed.md with three tables:

1. forward + backward of every vitkd loss relative to KD at (64, 100), (256, 1000), (1024, 1000);
2. images/s of one distillation training step (teacher forward without gradients, student forward
   and backward, SGD/AdamW step) of the paper recipes resnet56→resnet20, resnet32x4→resnet8x4 and
   DeiT-S→DeiT-nano at 32 px, three ways: vitkd's engine loop, a hand-written PyTorch step, timm's
   LogitDistillationTask (KD only) — see vitkd.benchmark.steps for exactly what is timed;
3. the training loader's images/s (Fashion-MNIST at 32 px, ``cifar`` transform) against the step's.

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
from vitkd.benchmark.report import machine_info, write_outputs
from vitkd.data import DataConfig

TABLES = Path(__file__).resolve().parents[1] / "recipes" / "cifar100"
PAIRS = {  # pair -> {loss: recipe}; the recipes' teachers and students, losses, weights and optimisers
    "resnet56→resnet20": {m: TABLES / f"table1/resnet56-resnet20_{m}.yaml" for m in ("kd", "luminet")},
    "resnet32x4→resnet8x4": {m: TABLES / f"table1/resnet32x4-resnet8x4_{m}.yaml" for m in ("kd", "luminet")},
    "deit_s→deit_nano": {m: TABLES / f"table6/deit_s-deit_nano_{m}.yaml" for m in ("kd", "luminet")},
}
NUM_CLASSES = 100  # CIFAR-100, the recipes' dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for speed.json and speed.md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the training steps")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--batch-size", type=int, default=64, help="training-step batch (all pairs)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed pass")
    parser.add_argument("--reps", type=int, default=5, help="timed passes per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--loss-reps", type=int, default=30, help="timed repetitions per loss and shape")
    parser.add_argument("--loader-batches", type=int, default=100, help="timed loader batches")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    losses = {f"{b}×{c}": timing.loss_timings(b, c, reps=args.loss_reps, warmup=5, device=device)
              for b, c in timing.LOSS_SHAPES}
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if args.bf16 else "no")
    results = []
    with tempfile.TemporaryDirectory() as run_dir:
        for pair in args.pairs:
            results += speed.compare_steps(pair, PAIRS[pair], accelerator, Path(run_dir), num_classes=NUM_CLASSES,
                                           batch_size=args.batch_size, steps=args.steps, reps=args.reps,
                                           warmup=args.warmup)
    loader_cfg = DataConfig("fashion_mnist", transform="cifar", image_size=32, num_workers=2)
    loader_rate = steps.loader_throughput(loader_cfg, batch_size=args.batch_size, batches=args.loader_batches,
                                          warmup=10)

    machine = machine_info()
    precision = "bf16 autocast" if args.bf16 else "fp32"
    markdown = "\n".join([
        f"## Speed ({device.type}, {precision})\n",
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, torch {machine['torch']} "
        f"({machine['torch_threads']} threads); load average at the end {machine['load_average']} (1/5/15 min).\n",
        f"### Losses: forward + backward, median of {args.loss_reps} interleaved repetitions\n",
        timing.loss_table(losses),
        f"### Training step: images/s, median [interquartile range] of {args.reps} interleaved passes of "
        f"{args.steps} steps (after {args.warmup} warm-up pass)\n",
        "engine = vitkd's `Trainer.train_epoch` (DistillationTask under accelerator.accumulate/autocast/backward, "
        "loss bookkeeping, log lines) over an Accelerate-prepared loader; plain = hand-written PyTorch step; "
        "timm = `timm.task.LogitDistillationTask` (KD only). Same recipe, batches, initial weights and "
        "optimiser for all; random-weight teachers.\n",
        speed.step_table(results),
        f"### Data loader vs training step (batch {args.batch_size})\n",
        speed.loader_table(loader_rate, results, label="Fashion-MNIST 32 px, cifar transform, 2 workers"),
    ])
    data = {
        "machine": machine, "device": str(device), "precision": precision, "settings": vars(args) | {"out": str(args.out)},
        "losses_ms": losses, "steps": [dataclasses.asdict(r) for r in results],
        "loader_images_per_s": loader_rate,
    }
    write_outputs(args.out, "speed", data, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
