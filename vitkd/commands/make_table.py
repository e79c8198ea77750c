"""Tabulate finished runs like the paper's Table 1: mean ± std over seeds, Δ vs KD, published numbers.

    vitkd make-table 'runs/cifar100/*' [--csv results.csv] [--markdown results.md]

Each argument is a run folder, a folder holding run folders (searched recursively) or a glob.
The Markdown table is printed, and written to --markdown when given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vitkd.cli import user_errors
from vitkd.results import aggregate, to_csv, to_markdown
from vitkd.run_folder import find_runs, read_run


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_GLOB", help="run folders, their parents, or globs")
    parser.add_argument("--csv", type=Path, help="also write the rows as CSV here")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    with user_errors(parser, FileNotFoundError, ValueError):
        rows = aggregate([read_run(path) for path in find_runs(args.runs)])
    table = to_markdown(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.csv:
        args.csv.write_text(to_csv(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
