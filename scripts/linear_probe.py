#!/usr/bin/env python
"""Linear probe of a frozen (distilled) model on another dataset (the paper's Fig. 4a: Tiny-ImageNet). Same as ``vitkd linear-probe``: see vitkd/commands/linear_probe.py."""

import sys

from vitkd.commands.linear_probe import main

if __name__ == "__main__":
    sys.exit(main())
