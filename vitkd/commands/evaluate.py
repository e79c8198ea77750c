"""Evaluate a student export or checkpoint on a dataset: top-1, top-5, NLL, ECE.

    vitkd evaluate --model runs/quickstart/seed0/student --data fashion_mnist
    vitkd evaluate --model runs/x/student --data fashion_mnist --set data.eval_split=test
    vitkd evaluate --model runs/quickstart/seed0/student --recipe recipes/quickstart.yaml
    vitkd evaluate --model ckpt_epoch_240.pth --arch cifar_resnet8x4 --recipe recipes/cifar100/...yaml

With --data, an export (a folder with config.json, or hf-hub:<org>/<repo>) is evaluated with its own
data config (input size, channels, mean/std, crop_pct, interpolation from its pretrained_cfg);
``--set data.KEY=VALUE`` changes it (other keys are refused: there is no recipe). With --recipe, the
recipe's data section is used and --set overrides any recipe key. A bare weights file needs --arch
(or the recipe's student). Prints the metrics as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

import yaml

from vitkd.cli import add_recipe_arguments, exit_with_error, recipe_from_args, user_errors
from vitkd.data import DataConfig, build_eval_loader
from vitkd.export import data_config_for, is_export, load_model


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="export folder, hf-hub:<org>/<repo>, weights file or checkpoint folder")
    parser.add_argument("--arch", help="architecture of a bare weights file (default: the recipe's student)")
    parser.add_argument("--data", help="a data source (builtin name, local folder, Hub id); data config from the export")
    add_recipe_arguments(parser, required=False)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", help="also write the metrics to this file")
    args = parser.parse_args(argv)
    if (args.recipe is None) == (args.data is None):
        exit_with_error(parser, "give exactly one of --recipe and --data")

    with user_errors(parser, FileNotFoundError, ValueError, TypeError):
        if args.recipe:
            recipe = recipe_from_args(args)
            loader, info = build_eval_loader(recipe.data, batch_size=args.batch_size)
            model = load_model(args.model, arch=args.arch or recipe.student.name, num_classes=info.num_classes,
                               in_chans=info.in_chans)
        elif is_export(args.model):
            model = load_model(args.model)
            data = _with_data_overrides(data_config_for(model, args.data), args.overrides)
            loader, info = build_eval_loader(data, batch_size=args.batch_size)
        else:
            data = _with_data_overrides(DataConfig(source=args.data), args.overrides)
            loader, info = build_eval_loader(data, batch_size=args.batch_size)
            model = load_model(args.model, arch=args.arch, num_classes=info.num_classes, in_chans=info.in_chans)
        if model.num_classes != info.num_classes:
            raise ValueError(f"{args.model} has {model.num_classes} classes but the evaluation data has "
                             f"{info.num_classes}: evaluate it on the dataset it was trained for")

    from accelerate import Accelerator

    from vitkd.engine.evaluate import evaluate

    accelerator = Accelerator()
    model, loader = accelerator.prepare(model, loader)
    metrics = evaluate(model, loader, accelerator)
    accelerator.print(json.dumps(metrics, indent=2))
    if args.json and accelerator.is_main_process:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _with_data_overrides(data: DataConfig, overrides: Sequence[str]) -> DataConfig:
    """``data`` with ``--set data.KEY=VALUE`` applied (values parsed as YAML); other keys are refused."""
    changes = {}
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    for item in overrides:
        key, sep, text = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not sep or section != "data" or name not in fields:
            raise ValueError(
                f"--set {item!r}: with --data only data.KEY=VALUE is accepted, KEY one of {sorted(fields)} "
                "(use --recipe to override other recipe keys)"
            )
        changes[name] = yaml.safe_load(text)
    return dataclasses.replace(data, **changes)


if __name__ == "__main__":
    sys.exit(main())
