"""Linear probe of a frozen (distilled) model on another dataset (the paper's Fig. 4a: Tiny-ImageNet).

    vitkd linear-probe --model runs/cifar100/wrn_40_2-wrn_16_2_luminet/seed0/student \
        --data zh-plus/tiny-imagenet --eval-split valid
    vitkd linear-probe --model ckpt.pth --arch cifar_wrn_16_2 --num-classes 100 --data digits

Features (forward_features + forward_head(pre_logits=True)) are computed once, without augmentation,
through the evaluation pipeline of the model's own data config (input size, mean/std, crop_pct,
interpolation); a linear classifier is then fitted to them by full-batch L-BFGS and scored on the
evaluation split. Prints the scores as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from vitkd.cli import user_errors


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="export folder, hf-hub:<org>/<repo> or weights file")
    parser.add_argument("--arch", help="timm architecture of a checkpoint file, e.g. cifar_wrn_16_2")
    parser.add_argument("--num-classes", type=int, help="head size of a checkpoint file")
    parser.add_argument("--data", required=True, help="dataset: builtin name, local path or Hub id")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", help="default: the first of validation/valid/.../test")
    parser.add_argument("--max-iter", "--epochs", dest="max_iter", type=int, default=100,
                        help="L-BFGS iterations, each one full pass over the cached features (default: 100)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty on the probe's weights")
    parser.add_argument("--batch-size", type=int, default=256, help="batch of the feature extraction")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from vitkd.export import data_config_for, load_model
    from vitkd.probe import linear_probe

    with user_errors(parser, FileNotFoundError, ValueError):
        model = load_model(args.model, arch=args.arch, num_classes=args.num_classes)
        splits = dict(train_split=args.train_split, eval_split=args.eval_split)
        data = data_config_for(model, args.data, num_workers=args.num_workers, **splits)
        result = linear_probe(
            model, data, batch_size=args.batch_size, max_iter=args.max_iter, weight_decay=args.weight_decay,
            device=args.device,
        )
    print(json.dumps({"model": args.model, "data": args.data, **dataclasses.asdict(result)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
