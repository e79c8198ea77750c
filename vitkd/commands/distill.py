"""Distil (or, with ``method: none``, train) a model from a recipe.

    accelerate launch scripts/distill.py --recipe recipes/deit_s_to_tiny.yaml [--set train.epochs=10] [--resume auto]
    vitkd distill --recipe recipes/quickstart.yaml
    vitkd distill --recipe recipes/deit_s_to_tiny.yaml --plan [--json]   # check and show the run, no training

``--plan`` resolves the recipe and prints the models, data, optimiser, the learning rate of every epoch,
the loss and every problem that would stop or spoil the run (exit status 1 when there are problems).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from vitkd.cli import add_recipe_arguments, recipe_from_args, user_errors


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue a run: 'auto' (default when given without value) = latest checkpoint, or a path")
    parser.add_argument("--plan", action="store_true", help="check the recipe and print what the run would do; no training")
    parser.add_argument("--json", action="store_true", help="with --plan: print the plan as one JSON object")
    args = parser.parse_args(argv)
    if args.json and not args.plan:
        parser.error("--json goes with --plan")
    with user_errors(parser):
        recipe = recipe_from_args(args)
    if args.plan:
        return _print_plan(recipe, as_json=args.json)
    from vitkd.engine import train  # after the recipe check: a bad recipe fails before torch/timm load

    command = " ".join([prog, *argv]) if prog and argv is not None else None  # None: this process's command line
    from vitkd.engine.trainer import RunPreempted

    try:
        with user_errors(parser, *_run_errors()):  # preflight problems (RecipeError) and run failures
            train(recipe, resume=args.resume, command=command)
    except RunPreempted as stop:  # SIGTERM/SIGINT: checkpoint written, a clean exit with the resume hint
        if os.environ.get("RANK", "0") == "0":
            print(stop, flush=True)
    return 0


def _print_plan(recipe, *, as_json: bool) -> int:
    from vitkd.plan import format_plan, make_plan

    plan = make_plan(recipe)
    print(json.dumps(plan, indent=2) if as_json else format_plan(plan))
    return 1 if plan["problems"] else 0


def _run_errors() -> tuple[type[Exception], ...]:
    """Failures of a run whose message says what happened and what to do (no traceback)."""
    from vitkd.engine import NonFiniteLossError
    from vitkd.engine.checkpoint import CheckpointError, DiskFullError, NonFiniteWeightsError
    from vitkd.engine.metrics import NonFiniteLogitsError
    from vitkd.engine.resume import ResumeRecipeError
    from vitkd.engine.run_lock import RunLockedError

    return (RunLockedError, ResumeRecipeError, CheckpointError, FileExistsError, DiskFullError, NonFiniteLossError,
            NonFiniteWeightsError, NonFiniteLogitsError)


if __name__ == "__main__":
    sys.exit(main())
