#!/usr/bin/env python
"""Run a recipe once per seed × grid point, one after another, each in its own run folder. Same as ``vitkd sweep``: see vitkd/commands/sweep.py."""

import sys

from vitkd.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
