"""A plain model as its warm-started CondNet twin: ``python tools/convert.py IN OUT --config C``."""

import sys

from condnet.tools.convert import main

if __name__ == "__main__":
    sys.exit(main())
