"""Store a recipe's teacher logits for every training sample, epoch and augmented view, to train from later.

    accelerate launch scripts/cache_teacher.py --recipe R --out DIR [--epochs N] [--dtype float16] [--topk K]
    vitkd cache-teacher --recipe R --out DIR
    vitkd distill --recipe R --set teacher.cache=DIR

A killed run resumes where it stopped (rerun the same command). ``--verify N`` then recomputes N random
entries with the live teacher and prints the largest difference. See vitkd/teacher_cache.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vitkd.cli import add_recipe_arguments, exit_with_error, recipe_from_args, user_errors


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--out", required=True, help="cache folder (created, or resumed if it holds this cache)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs to cache (default: train.epochs)")
    parser.add_argument("--dtype", default="float32", help="stored logit type: float32, float16 or bfloat16")
    parser.add_argument("--topk", type=int, default=None, help="store only the K largest logits (+ the label's)")
    parser.add_argument("--batch-size", type=int, default=None, help="teacher batch (default: train.batch_size)")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="afterwards, recompute N random entries with the live teacher")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        exit_with_error(parser, f"--epochs must be >= 1, got {args.epochs}")
    with user_errors(parser):
        recipe = recipe_from_args(args)
    from vitkd.teacher_cache import CacheMismatchError, verify_cache, write_cache  # after the recipe check

    with user_errors(parser, CacheMismatchError, ValueError, OSError):
        write_cache(recipe, args.out, epochs=args.epochs, dtype=args.dtype, topk=args.topk,
                    batch_size=args.batch_size)
    if args.verify:
        from accelerate import PartialState

        if PartialState().is_main_process:
            worst = verify_cache(recipe, args.out, args.verify)
            print(f"verify: {args.verify} entries recomputed, largest |cached - live| logit difference {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
