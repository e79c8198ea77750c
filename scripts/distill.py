#!/usr/bin/env python
"""Distil (or, with ``method: none``, train) a model from a recipe. Same as ``vitkd distill``: see vitkd/commands/distill.py."""

import sys

from vitkd.commands.distill import main

if __name__ == "__main__":
    sys.exit(main())
