#!/usr/bin/env python
"""Store a recipe's teacher logits to train from later. Same as ``vitkd cache-teacher``: see vitkd/commands/cache_teacher.py."""

import sys

from vitkd.commands.cache_teacher import main

if __name__ == "__main__":
    sys.exit(main())
