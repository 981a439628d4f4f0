"""The README's ops example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_ops_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "import condnet.ops" in b)
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)
    assert scope["logits"].shape == (2, 150, 64, 64)
    assert scope["class_feats"].shape == (2, 150, 512)
