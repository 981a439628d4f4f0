"""Mixed precision: the ``runner.amp`` / ``--amp`` names and the autocast they mean."""

from __future__ import annotations

import contextlib

import torch

#: ``runner.amp`` / ``--amp`` -> the dtype ``torch.autocast`` casts to.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, amp: str | None):
    """``torch.autocast(device_type, AMP_DTYPES[amp])``, or nothing when ``amp`` is None."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES[amp])
