"""What the emulated CUDA kernel tests share (tests/test_ops_cuda_emulated*.py):
the shapes, building a harness of tests/cuda_emulation/ and the comparison
with float64 math on the dtype-rounded inputs."""

from pathlib import Path

from torch.utils.cpp_extension import load

from tests.opcases import assert_close_to_truth

ROOT = Path(__file__).resolve().parents[1]

SHAPES = [  # B, C, K, H, W
    (2, 40, 7, 7, 9),  # ragged pixel tile, one class tile
    (1, 70, 70, 5, 13),  # two class tiles and two channel tiles in every dtype
    (3, 5, 1, 1, 1),  # one class, one pixel
    (2, 20, 5, 24, 24),  # 576 pixels: the pixel reductions run in 2 to 4 splits
    (1, 33, 130, 3, 11),  # three or more class tiles, a ragged last one
]


def build_harness(tmp_path_factory, name, harness):
    """The extension built from tests/cuda_emulation/<harness> (the CUDA
    sources it includes compiled for the host emulation)."""
    return load(
        name=name,
        sources=[str(ROOT / "tests" / "cuda_emulation" / harness)],
        extra_cflags=["-O1", "-std=c++20"],
        build_directory=str(tmp_path_factory.mktemp(name)),
    )


def close(name, got, truth, dtype):
    """Against float64 math on the dtype-rounded inputs (TOLERANCES' rtol and frac)."""
    assert_close_to_truth(f"{name} ({dtype})", got, truth, dtype)
