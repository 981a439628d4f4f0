"""condnet: CondNet's conditional classifier with fused kernels.

``import condnet.ops`` for the ops; the models and data live in their own
subpackages.
"""

__version__ = "0.1.0"
