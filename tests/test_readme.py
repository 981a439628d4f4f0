"""The README's Python examples run as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _run_block(marker: str) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if marker in b)
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)
    return scope


def test_readme_ops_example_runs():
    scope = _run_block("import condnet.ops")
    assert scope["logits"].shape == (2, 150, 64, 64)
    assert scope["class_feats"].shape == (2, 150, 512)


def test_readme_classifier_example_runs():
    scope = _run_block("from condnet.nn import ConditionalClassifier")
    assert scope["pred"].shape == (2, 32, 32)
    assert scope["classifier"].guidance_project.weight.grad is not None


def test_readme_model_example_runs():
    torch.manual_seed(0)
    scope = _run_block("from condnet.models import build_model")
    assert scope["logits"].shape == (2, 150, 64, 64)
    assert scope["pred"].shape == (2, 64, 64)
    torch.testing.assert_close(scope["probs"].sum(1), torch.ones(2, 64, 64))
    assert {"loss_seg", "loss_guidance", "loss_aux", "loss"} <= set(scope["losses"])
