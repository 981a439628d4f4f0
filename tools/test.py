"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]`` (see ``--help``)."""

import sys

from condnet.tools.test import main

if __name__ == "__main__":
    sys.exit(main())
