#!/usr/bin/env python
"""Distil (or, with ``method: none``, train) a model from a recipe.

    accelerate launch scripts/distill.py --recipe recipes/deit_s_to_tiny.yaml [--set train.epochs=10] [--resume auto]
"""

import argparse
import sys

from vitkd.cli import add_recipe_arguments, recipe_from_args
from vitkd.engine import train
from vitkd.recipe import RecipeError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue a run: 'auto' (default when given without value) = latest checkpoint, or a path")
    args = parser.parse_args(argv)
    try:
        recipe = recipe_from_args(args)
    except RecipeError as err:
        parser.exit(2, f"recipe error: {err}\n")
    train(recipe, resume=args.resume, command=" ".join(["scripts/distill.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
