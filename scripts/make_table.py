#!/usr/bin/env python
"""Tabulate finished runs like the paper's Table 1: mean ± std over seeds, Δ vs KD, published numbers.

    python scripts/make_table.py 'runs/cifar100/*' [--csv results.csv] [--markdown results.md]

Each argument is a run folder, a folder holding run folders (searched recursively) or a glob.
The Markdown table is printed, and written to --markdown when given.
"""

import argparse
import logging
import sys
from pathlib import Path

from vitkd.results import aggregate, find_run_dirs, read_run, to_markdown, write_csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_GLOB", help="run folders, their parents, or globs")
    parser.add_argument("--csv", type=Path, help="also write the rows as CSV here")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    try:
        rows = aggregate([read_run(path) for path in find_run_dirs(args.runs)])
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    table = to_markdown(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
