"""The import graph of condnet, read from the source with ``ast``: no module imports,
even inside a function, a module that imports it back."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / "condnet").rglob("*.py"))}


def _package_of(module: str) -> str:
    """The package a relative import in ``module`` starts from."""
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def imports_of(module: str) -> set[str]:
    """The condnet modules ``module`` imports anywhere in its source (a package's
    ``__init__`` counts as the package)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module)
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                # "from package import submodule" imports the submodule.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_reader_sees_every_kind_of_import():
    graph = {name: imports_of(name) for name in MODULES}
    assert "condnet.ops.registration" in graph["condnet.ops"]  # inside an if block
    assert "condnet.ops.backend" in graph["condnet.ops.functional"]  # relative
    assert "condnet.engine.trainer" in graph["condnet.tools.train"]  # inside a function
    assert "condnet.engine.dist" in graph["condnet.tools.train"]  # "from ..engine import dist"
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    found = cycles(graph)
    assert not found, "import cycles (each line a group that imports itself back):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def _defines(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for node in tree.body:  # if __name__ == "__main__":
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            names.add("__main__ block")
    return names


def test_commands_live_in_tools_and_libraries_import_plainly():
    # A command is a module of condnet/tools; library modules have no main, so the
    # packages need no lazy imports to avoid importing a running module twice.
    for module in MODULES:
        if not module.startswith("condnet.tools."):
            assert not {"main", "__main__ block"} & _defines(module), module
    for package in ("condnet.data", "condnet.models"):
        assert "__getattr__" not in _defines(package), package
    # Knowledge kept where it belongs: evaluation does not type-check condnet.nn, and
    # the benchmark report does not import a command line module.
    assert not any(m.startswith("condnet.nn") for m in imports_of("condnet.engine.evaluate"))
    report = ast.parse((ROOT / "benchmarks" / "report.py").read_text())
    imported = {
        node.module for node in ast.walk(report) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(name.startswith("condnet.tools") for name in imported), imported
