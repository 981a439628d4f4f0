"""List the packaged configs: ``python tools/configs.py [FILTER]`` (see ``--help``)."""

import sys

from condnet.tools.configs import main

if __name__ == "__main__":
    sys.exit(main())
