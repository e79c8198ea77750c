#!/usr/bin/env python
"""Tabulate finished runs like the paper's Table 1: mean ± std over seeds, Δ vs KD, published numbers. Same as ``vitkd make-table``: see vitkd/commands/make_table.py."""

import sys

from vitkd.commands.make_table import main

if __name__ == "__main__":
    sys.exit(main())
