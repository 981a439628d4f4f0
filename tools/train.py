"""Train a model: ``python tools/train.py CONFIG [options]`` (see ``--help``)."""

import sys

from condnet.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
