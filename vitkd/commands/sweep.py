"""Run a recipe once per seed × grid point, one after another, each in its own run folder.

    vitkd sweep --recipe recipes/cifar100/table1/resnet32x4-resnet8x4_luminet.yaml --seeds 0 1 2
    vitkd sweep --recipe R --grid distill.kwargs.temperature=1,2,4,8 --seeds 0 1 --dry-run
    vitkd sweep --recipe R --launcher "accelerate launch --num_processes 8" --set train.epochs=10

Each run is `<launcher> -m vitkd.commands.distill --recipe R --set ... --resume auto`; finished runs
are skipped, so starting the same sweep again finishes it. Tabulate with `vitkd make-table`.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence

from vitkd.cli import add_recipe_arguments, exit_with_error, user_errors
from vitkd.sweep import DISTILL_MODULE, parse_grid, plan_sweep, run_sweep


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values (default: 0)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="recipe keys to sweep, e.g. distill.kwargs.temperature=2,4 (Cartesian product)")
    parser.add_argument("--launcher", default=shlex.quote(sys.executable),
                        help=f'what runs `-m {DISTILL_MODULE}`, e.g. "accelerate launch" (default: this python)')
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    with user_errors(parser, ValueError):
        runs = plan_sweep(args.recipe, seeds=args.seeds, grid=parse_grid(args.grid), overrides=args.overrides)
    try:
        run_sweep(runs, args.recipe, launcher=shlex.split(args.launcher), dry_run=args.dry_run)
    except subprocess.CalledProcessError as err:
        exit_with_error(parser, f"a run failed ({err}); the sweep stopped there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
