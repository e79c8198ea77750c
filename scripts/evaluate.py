#!/usr/bin/env python
"""Evaluate a student export or checkpoint on a dataset: top-1, top-5, NLL, ECE.

    python scripts/evaluate.py --model runs/quickstart/seed0/student --recipe recipes/quickstart.yaml
    python scripts/evaluate.py --model ckpt_epoch_240.pth --arch cifar_resnet8x4 --recipe recipes/cifar100/...yaml
    python scripts/evaluate.py --model runs/x/student --data fashion_mnist --set data.transform=cifar

The data section comes from --recipe (its eval split and transform) or from --data SOURCE.
"""

import argparse
import json
import sys

from accelerate import Accelerator

from vitkd.data import DataConfig, build_eval_loader
from vitkd.engine.evaluate import evaluate, load_model
from vitkd.recipe import load_recipe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="export folder, weights file or checkpoint folder")
    parser.add_argument("--arch", help="architecture for a bare weights file (default: the recipe's student)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="take the data section (and the student's name) from this recipe")
    source.add_argument("--data", help="a data source (builtin name, local folder, Hub id)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe overrides, e.g. --set data.eval_split=test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", help="also write the metrics to this file")
    args = parser.parse_args(argv)

    if args.recipe:
        recipe = load_recipe(args.recipe, args.overrides)
        data_cfg, arch = recipe.data, args.arch or recipe.student.name
    else:
        data_cfg, arch = DataConfig(source=args.data), args.arch
    loader, info = build_eval_loader(data_cfg, batch_size=args.batch_size)
    model = load_model(args.model, arch=arch, num_classes=info.num_classes, in_chans=info.in_chans)
    accelerator = Accelerator()
    model, loader = accelerator.prepare(model, loader)
    metrics = evaluate(model, loader, accelerator)
    accelerator.print(json.dumps(metrics, indent=2))
    if args.json and accelerator.is_main_process:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
