"""SBD's masks for VOC ``trainaug``: ``python tools/convert_voc_aug.py DEVKIT`` (``--help``)."""

import sys

from condnet.tools.convert_voc_aug import main

if __name__ == "__main__":
    sys.exit(main())
