#!/usr/bin/env python
"""Run a recipe once per seed × grid point, one after another, each in its own run folder.

    python scripts/sweep.py --recipe recipes/cifar100/table1/resnet32x4-resnet8x4_luminet.yaml --seeds 0 1 2
    python scripts/sweep.py --recipe R --grid distill.kwargs.temperature=1,2,4,8 --seeds 0 1 --dry-run
    python scripts/sweep.py --recipe R --launcher "accelerate launch --num_processes 8" --set train.epochs=10

Each run is `scripts/distill.py --recipe R --set ... --resume auto`; runs that already have a
summary.json are skipped, so starting the same sweep again finishes it. Tabulate with make_table.py.
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from vitkd.recipe import RecipeError
from vitkd.sweep import parse_grid, plan_sweep, run_sweep

DISTILL_SCRIPT = Path(__file__).with_name("distill.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", required=True, help="YAML recipe (see recipes/README.md)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values (default: 0)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="recipe keys to sweep, e.g. distill.kwargs.temperature=2,4 (Cartesian product)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every run, e.g. --set train.epochs=10 (repeatable)")
    parser.add_argument("--launcher", default=shlex.quote(sys.executable),
                        help='what runs scripts/distill.py, e.g. "accelerate launch" (default: this python)')
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    try:
        runs = plan_sweep(args.recipe, seeds=args.seeds, grid=parse_grid(args.grid), overrides=args.overrides)
    except (RecipeError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    try:
        launcher = shlex.split(args.launcher)
        run_sweep(runs, args.recipe, script=DISTILL_SCRIPT, launcher=launcher, dry_run=args.dry_run)
    except subprocess.CalledProcessError as err:
        parser.exit(err.returncode or 1, f"error: a run failed ({err}); the sweep stopped there\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
