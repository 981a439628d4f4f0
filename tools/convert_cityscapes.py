"""Cityscapes' train-id annotations: ``python tools/convert_cityscapes.py ROOT`` (``--help``)."""

import sys

from condnet.tools.convert_cityscapes import main

if __name__ == "__main__":
    sys.exit(main())
