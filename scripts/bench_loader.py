"""Training-loader throughput of vitkd.data, in images per second; prints a Markdown table.

Cases: (a) Fashion-MNIST (the offline builtin) resized to 32 px with the ``cifar`` transform; (b) a
generated image folder of random 256×256 JPEGs through the 224-px ``imagenet`` transform.

    python scripts/bench_loader.py --workers 2 --batches 200
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from vitkd.benchmark.steps import loader_throughput
from vitkd.data import DataConfig
from vitkd.data.synthetic import write_image_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batches", type=int, default=200, help="timed batches per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first (worker start-up)")
    parser.add_argument("--folder-images", type=int, default=500, help="JPEGs in the generated image folder")
    parser.add_argument("--cache-dir", default=None, help="vitkd cache for the converted Fashion-MNIST")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_image_folder(
            Path(tmp) / "jpegs", num_classes=5, per_class=args.folder_images // 5, size=256, suffix=".jpg"
        )
        fashion = DataConfig(
            "fashion_mnist", transform="cifar", num_workers=args.workers, cache_dir=args.cache_dir
        )
        jpegs = DataConfig(
            str(folder), eval_split="train", transform="imagenet", num_workers=args.workers, cache_dir=tmp
        )
        cases = [
            ("Fashion-MNIST 28→32 px", "cifar", 128, fashion),
            ("random 256 px JPEG folder → 224 px", "imagenet", 64, jpegs),
        ]
        for name, transform, batch_size, cfg in cases:
            rate = loader_throughput(cfg, batch_size=batch_size, batches=args.batches, warmup=args.warmup)
            rows.append(f"| {name} | {transform} | {batch_size} | {args.workers} | {rate:,.0f} |")
    print("| data | transform | batch | workers | images/s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
