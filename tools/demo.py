"""CondNet against its plain twin on the generated scenes: ``python tools/demo.py``."""

import sys

from condnet.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
