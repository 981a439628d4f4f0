"""Inference speed of a config's model: ``python tools/benchmark.py CONFIG`` (see ``--help``)."""

import sys

from condnet.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
