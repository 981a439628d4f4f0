"""Write the generated scene set: ``python tools/make_scenes.py --out data/scenes`` (``--help``)."""

import sys

from condnet.tools.make_scenes import main

if __name__ == "__main__":
    sys.exit(main())
