"""A released CondNet checkpoint as condnet weights: ``python tools/convert_released.py IN OUT``."""

import sys

from condnet.tools.convert_released import main

if __name__ == "__main__":
    sys.exit(main())
