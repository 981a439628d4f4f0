"""condnet needs none of the ``integrations`` extra: it imports and converts
networks with those packages made unimportable (in a subprocess).

torchvision is blocked only for ``condnet``, ``condnet.ops`` and ``condnet.nn``:
timm, a core dependency that ``condnet.models`` builds its backbones with,
imports torchvision itself.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)

sys.meta_path.insert(0, Block())
"""

CONVERT = """
import torch
from torch import nn
from condnet.nn import make_conditional

net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
make_conditional(net)
assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
"""


def run(blocked, body):
    code = f"BLOCKED = {tuple(blocked)!r}\n" + BLOCKER + body
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


GUIDANCE = """
import condnet.models, condnet.data, condnet.engine
from condnet.nn import guidance_loss

net.train()(torch.randn(2, 3, 8, 8))
assert guidance_loss(net, torch.zeros(2, 8, 8, dtype=torch.long)) >= 0
"""

INTEGRATIONS = ("torchvision", "segmentation_models_pytorch", "transformers")


def test_core_imports_and_converts_without_any_of_them():
    run(INTEGRATIONS, "import condnet, condnet.ops, condnet.nn\n" + CONVERT)


def test_models_data_engine_and_guidance_loss_without_smp_and_transformers():
    run(INTEGRATIONS[1:], CONVERT + GUIDANCE)
