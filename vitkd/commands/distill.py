"""Distil (or, with ``method: none``, train) a model from a recipe.

    accelerate launch scripts/distill.py --recipe recipes/deit_s_to_tiny.yaml [--set train.epochs=10] [--resume auto]
    vitkd distill --recipe recipes/quickstart.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vitkd.cli import add_recipe_arguments, recipe_from_args, user_errors


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue a run: 'auto' (default when given without value) = latest checkpoint, or a path")
    args = parser.parse_args(argv)
    with user_errors(parser):
        recipe = recipe_from_args(args)
    from vitkd.engine import train  # after the recipe check: a bad recipe fails before torch/timm load

    command = " ".join([prog, *argv]) if prog and argv is not None else None  # None: this process's command line
    train(recipe, resume=args.resume, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
