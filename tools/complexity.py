"""Params and FLOPs of a config's model: ``python tools/complexity.py CONFIG`` (see ``--help``)."""

import sys

from condnet.tools.complexity import main

if __name__ == "__main__":
    sys.exit(main())
