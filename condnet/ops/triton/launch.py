"""How the launchers start a kernel: through ``torch.library.wrap_triton``, so
that torch.compile and fake-tensor tracing see the launch.

Under ``TRITON_INTERPRET=1`` ``@triton.jit`` makes an interpreted function
that runs on CPU tensors and cannot be traced (and torch releases before
2.14 refuse it in ``wrap_triton``). For those the launch runs eagerly, and
with fake tensors (shape inference, torch.compile's tracing) it is skipped:
the outputs are allocated by the launcher before the launch, so their shapes
and strides are already right, which is all a fake run computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import is_fake

try:
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # a triton without the interpreter
    InterpretedFunction = ()


def interpreted(kernel: Any) -> bool:
    """Whether ``kernel`` was made by ``@triton.jit`` under TRITON_INTERPRET=1."""
    return isinstance(kernel, InterpretedFunction)


class _EagerLaunch:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if any(is_fake(t) for t in tensors):
                return None
            return self.kernel[grid](*args, **kwargs)

        return launch


def wrap_triton(kernel: Any) -> Any:
    """``torch.library.wrap_triton`` for compiled kernels; eager for interpreted ones."""
    if interpreted(kernel):
        return _EagerLaunch(kernel)
    return torch.library.wrap_triton(kernel)
