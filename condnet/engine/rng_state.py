"""The state of every random number generator a training run draws from, saved in
its checkpoints so that a resumed run repeats the uninterrupted one exactly."""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping

import numpy as np
import torch


def capture_rng_state() -> dict:
    """The state of Python's ``random``, NumPy's global generator, torch's
    CPU generator and every CUDA device's generator, as tensors, ints, floats,
    strings, lists and dicts only (loadable with ``weights_only=True``)."""
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    if not isinstance(numpy_state, tuple):  # legacy=True: the MT19937 tuple, never a dict
        raise TypeError(f"NumPy's legacy RNG state is not a tuple: {type(numpy_state).__name__}")
    kind, keys, pos, has_gauss, cached_gaussian = numpy_state
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def _cpu_bytes(value) -> torch.Tensor:
    # A checkpoint loaded with map_location="cuda" has its generator states on the GPU.
    return torch.as_tensor(value).to("cpu", torch.uint8)


def restore_rng_state(state: Mapping) -> None:
    """Restores what :func:`capture_rng_state` captured. CUDA states are set
    for the devices present (with a warning when the device count differs)."""
    missing = {"python", "numpy", "torch", "cuda"} - set(
        state if isinstance(state, Mapping) else ()
    )
    if missing:
        raise ValueError(f"RNG state must come from capture_rng_state(); missing {sorted(missing)}")
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = torch.as_tensor(npy["keys"]).cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    cuda = list(state["cuda"])
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda and len(cuda) != devices:
        warnings.warn(
            f"RNG state holds {len(cuda)} CUDA generator(s), this process sees {devices}; "
            f"restoring the first {min(len(cuda), devices)}",
            RuntimeWarning,
            stacklevel=2,
        )
    for index, device_state in enumerate(cuda[:devices]):
        torch.cuda.set_rng_state(_cpu_bytes(device_state), index)
