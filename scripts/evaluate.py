#!/usr/bin/env python
"""Evaluate a student export or checkpoint on a dataset: top-1, top-5, NLL, ECE. Same as ``vitkd evaluate``: see vitkd/commands/evaluate.py."""

import sys

from vitkd.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
