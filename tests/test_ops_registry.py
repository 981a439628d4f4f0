"""The backend registry and the one copy of every schema: a backend is one
registration, the public ops find their kernel only there, the Triton ops
and the C++ ops have the same schemas, and nothing on a fast path imports
the specification."""

import ast
from pathlib import Path

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference, registry
from condnet.ops.schemas import SCHEMAS
from tests.opcases import KERNEL_BACKENDS, make_inputs, needs_extension, needs_interpreter

ROOT = Path(__file__).resolve().parents[1]


def _schema(namespace: str, op: str) -> torch._C.FunctionSchema:
    return getattr(getattr(torch.ops, namespace), op).default._schema


def _expected(namespace: str, op: str) -> torch._C.FunctionSchema:
    return torch._C.parse_schema(f"{namespace}::{op}{SCHEMAS[op]}")


@needs_extension
@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_the_cpp_ops_have_the_python_schemas(op):
    assert _schema("condnet", op) == _expected("condnet", op)


@needs_interpreter
@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_the_triton_ops_have_the_same_schemas(op):
    assert _schema("condnet_triton", op) == _expected("condnet_triton", op)


def test_every_backend_is_registered_and_named():
    assert ops.BACKENDS == registry.names()
    assert ops.BACKENDS == ("auto", "extension", "reference", "triton")
    assert registry._AUTO_ORDER[-1].name == "reference"  # the last resort of "auto"


@pytest.fixture
def private_registry(monkeypatch):
    """The registry's tables as copies, so a test's backends vanish after it."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    monkeypatch.setattr(registry, "_AUTO_ORDER", list(registry._AUTO_ORDER))


def _counting_backend(calls: list, rank: int, reason=None) -> registry.Backend:
    """A backend that runs the reference and records which ops it ran."""

    def kernel(op):
        base = registry._BACKENDS["reference"].kernel(op)

        def run(*args):
            calls.append(op)
            return base(*args)

        return run

    return registry.Backend(
        name="counting",
        kernel=kernel,
        unavailable_reason=lambda op, device: reason,
        auto_rank=rank,
        auto_devices=frozenset({"cpu"}),
    )


def test_a_new_backend_is_one_registration(private_registry):
    calls = []
    registry.register(_counting_backend(calls, rank=1000))
    assert "counting" in registry.names()
    x, gw, gb, w, b = make_inputs(2, 5, 3, 4, 4)
    A, a = torch.randn(3, 6, 5, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    f = torch.randn(2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(
        ops.class_pool(x, gw, gb, backend="counting"), reference.class_pool(x, gw, gb)
    )
    with ops.use_backend("counting"):
        ops.dynamic_classify(x, w, b)
        ops.project_per_class(f, A, a)
        got = ops.conditional_classifier(x, gw, gb, A, a, layout="per_class")
    want = reference.conditional_classifier(x, gw, gb, A, a, layout="per_class")
    torch.testing.assert_close(got, want)
    assert calls == ["class_pool", "dynamic_classify", "project", "conditional_classifier"]


def test_auto_takes_the_lowest_rank_that_can_run(private_registry):
    calls = []
    registry.register(_counting_backend(calls, rank=0))
    assert registry.resolve("class_pool", "cpu") == "counting"
    assert registry.resolve("class_pool", "cuda") != "counting"  # not an auto device there
    registry._AUTO_ORDER.remove(registry._BACKENDS.pop("counting"))
    registry.register(_counting_backend(calls, rank=0, reason="counting is switched off"))
    assert registry.resolve("class_pool", "cpu") != "counting"
    with pytest.raises(RuntimeError, match="counting is switched off"):
        registry.resolve("class_pool", "cpu", "counting")


def test_registering_a_name_twice_or_auto_is_refused(private_registry):
    with pytest.raises(ValueError, match="'reference' is already registered"):
        registry.register(registry._BACKENDS["reference"])
    auto = registry.Backend("auto", lambda op: None, lambda op, d: None, auto_rank=0)
    with pytest.raises(ValueError, match="'auto' is already registered"):
        registry.register(auto)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_every_kernel_backend_refuses_an_unknown_layout(backend):
    x, gw, gb, _, _ = make_inputs(1, 3, 2, 2, 2)
    A, a = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    kernel = registry.kernel("conditional_classifier", "cpu", backend)
    with pytest.raises(ValueError, match="layout must be one of .*'per_class'.*got 'official'"):
        kernel(x, gw, gb, A, a, "official")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            found.update(f"{dots}{node.module or ''}:{alias.name}" for alias in node.names)
            found.add(f"{dots}{node.module or ''}")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _imports_reference(path: Path) -> bool:
    return any(
        n.split(":")[0].endswith("reference") or n.endswith(":reference") for n in _imports(path)
    )


def test_the_import_reader_sees_the_specification():
    assert _imports_reference(ROOT / "condnet/ops/reference_backend.py")
    assert not _imports_reference(ROOT / "condnet/ops/__init__.py")  # reference_backend only


def test_only_the_reference_backend_imports_the_specification():
    importers = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "condnet").rglob("*.py"))
        if _imports_reference(path)
    ]
    assert importers == ["condnet/ops/reference_backend.py"]


def test_the_public_ops_choose_a_kernel_only_through_the_registry():
    source = (ROOT / "condnet" / "ops" / "functional.py").read_text()
    assert "torch.ops." not in source
    assert source.count("registry.kernel(") == len(registry.OPS)  # one lookup per public op
