"""The command line: the ``vitkd`` console command and the argument helpers every entry point uses.

``vitkd <command> [options]`` runs one of :data:`COMMANDS` (``vitkd distill --recipe R --set k=v``);
``scripts/<command>.py`` are thin wrappers around the same functions, for a source checkout. Every
command that takes a recipe takes it as ``--recipe PATH`` plus repeatable ``--set key=value``
overrides (:func:`add_recipe_arguments`), and reports a bad recipe, a missing file or a bad value as
one ``error: ...`` line on stderr with exit status 2, without a traceback (:func:`user_errors`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from vitkd.recipe import Recipe, RecipeError, load_recipe

__all__ = [
    "COMMANDS",
    "add_overrides_argument",
    "add_recipe_arguments",
    "exit_with_error",
    "main",
    "recipe_from_args",
    "user_errors",
]

# command -> (module whose main(argv) runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("vitkd.commands.distill", "distil (or train) a model from a recipe"),
    "cache-teacher": ("vitkd.commands.cache_teacher", "store a recipe's teacher logits to distil from later"),
    "evaluate": ("vitkd.commands.evaluate", "top-1/top-5/NLL/ECE of an export or checkpoint on a dataset"),
    "linear-probe": ("vitkd.commands.linear_probe", "linear probe of a frozen model's features"),
    "make-table": ("vitkd.commands.make_table", "results table (mean ± std over seeds) of finished runs"),
    "push-to-hub": ("vitkd.commands.push_to_hub", "upload a run's student or an export to the model Hub"),
    "sweep": ("vitkd.commands.sweep", "run a recipe over seeds and a grid of settings"),
}


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, typed against the schema, e.g. --set train.epochs=10 (repeatable)",
    )


def add_recipe_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--recipe PATH`` and ``--set KEY=VALUE`` (see :func:`recipe_from_args`)."""
    parser.add_argument("--recipe", required=required, help="YAML recipe (see recipes/)")
    add_overrides_argument(parser)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The validated recipe of ``--recipe`` with the ``--set`` overrides; raises RecipeError."""
    return load_recipe(args.recipe, args.overrides)


@contextmanager
def user_errors(parser: argparse.ArgumentParser, *errors: type[Exception]) -> Iterator[None]:
    """Report ``RecipeError`` (and ``errors``) as ``error: ...`` and exit with status 2, no traceback.

    Use it around the part of a command that reads user input (recipe, files, data sources); errors of
    the other kinds keep their traceback, since they are bugs to report.
    """
    try:
        yield
    except (RecipeError, *errors) as err:
        exit_with_error(parser, err)


def exit_with_error(parser: argparse.ArgumentParser, err: BaseException | str) -> NoReturn:
    parser.exit(2, f"{parser.prog}: error: {err}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``vitkd <command> [options]``: run the command's ``main`` with the remaining arguments."""
    parser = argparse.ArgumentParser(
        prog="vitkd", description="Knowledge distillation for vision models.",
        epilog="Run `vitkd <command> --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main([*rest, *argv[1:]], prog=f"vitkd {args.command}") or 0


if __name__ == "__main__":
    sys.exit(main())
