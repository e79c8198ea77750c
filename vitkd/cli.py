"""Argument parsing shared by the entry points in ``scripts/`` (they stay thin)."""

from __future__ import annotations

import argparse

from vitkd.recipe import Recipe, load_recipe

__all__ = ["add_recipe_arguments", "recipe_from_args"]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="YAML recipe (see recipes/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, typed against the schema, e.g. --set train.epochs=10 (repeatable)",
    )


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return load_recipe(args.recipe, args.overrides)
