"""The README and docs/ say what is true: every ```python block runs as written,
standalone; every shell block names only Makefile targets, console scripts and
repository paths that exist; every link to a local file resolves.

Six examples are run by their own tests, which check what they produce (found by
a line only they contain); every other Python block runs in
test_python_block_runs.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A block is an example meant to run in seconds on a laptop CPU; a slow one
# belongs in the tests, not in the docs. Counted in CPU time (all the process's
# threads), not wall time, so that other work on a shared machine does not fail it.
BLOCK_CPU_SECONDS = 60
README_MAX_LINES = 400  # a README a user reads, not a lab notebook

# The packages of the integrations extra: `make test` installs them and CI
# requires them; elsewhere a block that imports one is skipped without it.
OPTIONAL_PACKAGES = ("torchvision", "segmentation_models_pytorch", "transformers")

# Fence languages the docs may use; a Python example under another name
# (```py) would escape the tests.
FENCE_LANGUAGES = {"python", "bash", "sh", "bibtex", ""}
SHELL_LANGUAGES = {"bash", "sh"}

# Shell paths under these folders are what the commands write, not files of
# the repository.
OUTPUT_ROOTS = {"data", "work_dirs", "build"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^```(\S*)\s*$")


def _blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: a code block is never closed"
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(path, i + 1, opening.group(1), code))
        i = end + 1
    return blocks


BLOCKS = [block for path in DOCS for block in _blocks(path)]
PYTHON = [b for b in BLOCKS if b.language == "python"]
SHELL = [b for b in BLOCKS if b.language in SHELL_LANGUAGES]

# Blocks with their own test below: a line only that block contains.
MARKERS = {
    "ops": "import condnet.ops as ops\n\nx = torch.randn(2, 512, 64, 64)",
    "classifier": "from condnet.nn import ConditionalClassifier",
    "model": "from condnet.models import build_model",
    "torchvision": "from torchvision.models.segmentation import deeplabv3_resnet50",
    "smp": "import segmentation_models_pytorch as smp",
    "transformers": "from transformers import SegformerConfig",
}


def _marked(marker: str) -> Block:
    found = [b for b in PYTHON if marker in b.code]
    names = [b.name for b in found]
    assert len(found) == 1, f"{marker!r} should be in exactly one python block; found {names}"
    return found[0]


MARKED = {_marked(marker).name for marker in MARKERS.values()}


def _imported_packages(code: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.partition(".")[0])
    return found


@pytest.fixture
def run_block(tmp_path, monkeypatch):
    """Runs a block in a fresh namespace, in an empty folder (what it writes,
    through relative paths or tempfile, lands there), within BLOCK_CPU_SECONDS."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(block: Block) -> dict:
        for package in sorted(_imported_packages(block.code) & set(OPTIONAL_PACKAGES)):
            if not os.environ.get("CI"):
                pytest.importorskip(package)
        scope: dict = {"__name__": "__main__"}
        start = time.process_time()
        exec(compile(block.code, block.name, "exec"), scope)
        seconds = time.process_time() - start
        assert seconds < BLOCK_CPU_SECONDS, (
            f"{block.name} took {seconds:.0f} s of CPU time; keep examples small"
        )
        return scope

    return run


def test_blocks_use_known_languages():
    unknown = [f"{b.name} ```{b.language}" for b in BLOCKS if b.language not in FENCE_LANGUAGES]
    assert not unknown, f"use one of {sorted(FENCE_LANGUAGES)}: {unknown}"


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"


@pytest.mark.parametrize("block", [b for b in PYTHON if b.name not in MARKED], ids=lambda b: b.name)
def test_python_block_runs(block, run_block):
    torch.manual_seed(0)
    run_block(block)


def test_ops_example_runs(run_block):
    scope = run_block(_marked(MARKERS["ops"]))
    assert scope["logits"].shape == (2, 150, 64, 64)
    assert scope["class_feats"].shape == (2, 150, 512)


def test_classifier_example_runs(run_block):
    scope = run_block(_marked(MARKERS["classifier"]))
    assert scope["pred"].shape == (2, 32, 32)
    assert scope["classifier"].guidance_project.weight.grad is not None


def test_model_example_runs(run_block):
    torch.manual_seed(0)
    scope = run_block(_marked(MARKERS["model"]))
    assert scope["logits"].shape == (2, 150, 64, 64)
    assert scope["pred"].shape == (2, 64, 64)
    torch.testing.assert_close(scope["probs"].sum(1), torch.ones(2, 64, 64))
    assert {"loss_seg", "loss_guidance", "loss_aux", "loss"} <= set(scope["losses"])


def _converted(model):
    from condnet.nn import conditional_classifiers

    return [name for name, _ in conditional_classifiers(model)]


def test_torchvision_example_runs(run_block):
    torch.manual_seed(0)
    scope = run_block(_marked(MARKERS["torchvision"]))
    assert _converted(scope["model"]) == ["classifier.4"]
    assert scope["out"]["out"].shape == (2, 21, 64, 64)
    assert scope["model"].classifier[4].guidance_project.weight.grad is not None


def test_smp_example_runs(run_block):
    torch.manual_seed(0)
    scope = run_block(_marked(MARKERS["smp"]))
    assert _converted(scope["model"]) == ["segmentation_head.0"]
    assert scope["logits"].shape == (2, 6, 64, 64)


def test_transformers_example_runs(run_block):
    torch.manual_seed(0)
    scope = run_block(_marked(MARKERS["transformers"]))
    assert _converted(scope["model"]) == ["decode_head.classifier"]
    assert scope["outputs"].logits.shape == (2, 150, 16, 16)
    assert scope["loss"].isfinite()


# --- shell blocks ---


def _make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.$()/ -]+?)\s*:(?!=)", line)
        if rule and not line.startswith((" ", "\t")):
            targets.update(rule.group(1).split())
    return targets


def _console_scripts() -> set[str]:
    """The names under [project.scripts] in pyproject.toml (read without tomllib,
    which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section, "pyproject.toml has no [project.scripts]"
    return set(re.findall(r"^([\w-]+)\s*=", section.group(1), re.M))


def _packaged_configs() -> set[str]:
    """The config names every command takes: the stems of condnet/configs/**/*.py
    outside _base_."""
    folder = ROOT / "condnet" / "configs"
    return {p.stem for p in folder.rglob("*.py") if "_base_" not in p.relative_to(folder).parts}


# Commands whose first argument is a config, and the options that take one.
CONFIG_COMMANDS = {"condnet-train", "condnet-test", "condnet-benchmark", "condnet-export"}
CONFIG_OPTIONS = {"--config"}


def _config_names(words: list[str]) -> list[str]:
    """The config names (not paths, not placeholders) a command names."""
    named = [words[i + 1] for i, w in enumerate(words[:-1]) if w in CONFIG_OPTIONS]
    positional = [w for w in words[1:] if not w.startswith("-")]
    if words[0] in CONFIG_COMMANDS and positional:
        named.append(positional[0])
    return [n for n in named if not re.search(r"[/<>$]|\.py$", n)]


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a shell block: its words, comments and line
    continuations removed, split at ; && || |."""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if set(token) <= set(";&|"):
                commands.append(words)
                words = []
            else:
                words.append(token)
        commands.append(words)
    return [c for c in commands if c]


def _is_repository_path(word: str) -> bool:
    if "/" not in word or word.startswith(("-", "/", "~", "$", "http:", "https:")):
        return False
    if any(c in word for c in "<>*{}=$'\"()"):  # placeholders, globs, options, substitutions
        return False
    return word.split("/")[0] not in OUTPUT_ROOTS


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.name)
def test_shell_block_names_what_exists(block):
    targets, scripts = _make_targets(), _console_scripts()
    problems = []
    for words in _commands(block.code):
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value command
            words = words[1:]
        if not words:
            continue
        if words[0] == "make":
            named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            problems += [f"make {t}: no such Makefile target" for t in named if t not in targets]
        if words[0].startswith("condnet-") and words[0] not in scripts:
            problems.append(f"{words[0]}: not a console script in pyproject.toml")
        configs = _packaged_configs()
        problems += [
            f"{name}: not a packaged config (condnet/configs/)"
            for name in _config_names(words)
            if name not in configs
        ]
        for word in words:
            if _is_repository_path(word) and not (ROOT / word.rstrip("/")).exists():
                problems.append(f"{word}: no such path in the repository")
    assert not problems, f"{block.name}:\n" + "\n".join(problems)


# --- links ---


def _prose(path: Path) -> str:
    """The file without its code blocks and inline code, where brackets are code."""
    text = path.read_text()
    for block in _blocks(path):
        text = text.replace(block.code, "")
    return re.sub(r"`[^`\n]*`", "", text)


def _heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the file's headings: lower case, punctuation dropped,
    spaces as hyphens."""
    text = path.read_text()
    for block in _blocks(path):
        text = text.replace(block.code, "")
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h).lower().replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(path)):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _heading_anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading #{anchor}")
    assert not broken, f"{path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_docs_are_linked_from_the_readme():
    readme = _prose(ROOT / "README.md")
    unlinked = [p.name for p in DOCS[1:] if f"(docs/{p.name}" not in readme]
    assert not unlinked, f"README.md links none of {unlinked}"
