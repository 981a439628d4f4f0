"""Export a model to TorchScript or ONNX: ``python tools/export.py CONFIG CKPT`` (``--help``)."""

import sys

from condnet.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
