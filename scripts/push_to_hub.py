#!/usr/bin/env python
"""Push a distilled student to the Hugging Face Hub. Same as ``vitkd push-to-hub``: see vitkd/commands/push_to_hub.py."""

import sys

from vitkd.commands.push_to_hub import main

if __name__ == "__main__":
    sys.exit(main())
