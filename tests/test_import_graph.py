"""The import graph of condnet, read from the source with ``ast``: no module imports,
even inside a function, a module that imports it back, and no module imports a layer
above its own.

An import counts with everything Python runs for it: ``import condnet.models.losses``
and ``from condnet.models import losses`` also import the packages ``condnet`` and
``condnet.models`` (their ``__init__``). Only the packages that contain the importing
module are left out: they are loaded before it anyway."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The layers of the package, lowest first. A module may import its own layer and the
# layers below it, never one above; a module in no layer fails the test, so a new
# subpackage or top-level module gets its place here. The root package ``condnet`` (its
# ``__init__``, which every import runs first) holds only the version;
# ``checkpoint_files`` (reading and atomically writing .pth files) imports no other
# condnet module and serves models, engine and tools; ``diagnostics`` (measurements of
# a training run) reads nn's classifiers and is used by the engine's trainer.
LAYERS = (
    "condnet",
    "condnet.checkpoint_files",
    "condnet.ops",
    "condnet.nn",
    "condnet.models",
    "condnet.data",
    "condnet.diagnostics",
    "condnet.engine",
    "condnet.demo",
    "condnet.tools",
)


def find_modules(source_root: Path, package: str = "condnet") -> dict[str, Path]:
    """Module name -> file for every module of ``package`` under ``source_root`` (a
    package's ``__init__`` counts as the package). Files in folders without an
    ``__init__.py`` are data, not modules (the config files of ``condnet/configs``)."""
    modules = {}
    for path in sorted((source_root / package).rglob("*.py")):
        folders = path.parent.relative_to(source_root).parts
        if not all(
            (source_root.joinpath(*folders[: i + 1]) / "__init__.py").is_file()
            for i in range(len(folders))
        ):
            continue
        parts = path.relative_to(source_root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = find_modules(ROOT)


def _package_of(module: str, modules: dict[str, Path]) -> str:
    """The package a relative import in ``module`` starts from."""
    is_package = modules[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: what ``import a.b.c`` runs."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _type_checking_imports(tree: ast.AST) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:`` (read by type checkers only)."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                found.update(ast.walk(statement))
    return found


def imports_of(
    module: str, modules: dict[str, Path] = MODULES, type_checking: bool = True
) -> set[str]:
    """The condnet modules ``module`` imports anywhere in its source (inside functions
    and ``if`` blocks too), with the parent packages each import runs. Imports under
    ``if TYPE_CHECKING:`` count unless ``type_checking`` is False: they are
    dependencies for the layers, but never run, so they close no cycle."""
    tree = ast.parse(modules[module].read_text(), str(modules[module]))
    skipped = set() if type_checking else _type_checking_imports(tree)
    named, run_first = set(), set()  # what the import names; packages it runs before that
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, modules)
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                # "from package import submodule" imports the submodule, after the package.
                if f"{base}.{alias.name}" in modules:
                    named.add(f"{base}.{alias.name}")
                    run_first.add(base)
                else:
                    named.add(base)
    for name in list(named):
        run_first.update(_with_parents(name)[:-1])
    found = named | (run_first - set(_with_parents(module)))
    return {name for name in found if name in modules and name != module}


def layer_of(module: str, layers: tuple[str, ...] = LAYERS) -> int | None:
    """The index in ``layers`` of the longest entry that is ``module`` or a package
    holding it; the root package's entry stands for its ``__init__`` alone."""
    matches = [
        i
        for i, name in enumerate(layers)
        if module == name or ("." in name and module.startswith(name + "."))
    ]
    return max(matches, key=lambda i: len(layers[i]), default=None)


def layer_violations(modules: dict[str, Path], layers: tuple[str, ...] = LAYERS) -> list[str]:
    """One line per import of a higher layer, and per module in no layer."""
    problems = []
    for module in sorted(modules):
        own = layer_of(module, layers)
        if own is None:
            problems.append(f"{module} is in no layer; place it in LAYERS")
            continue
        for imported in sorted(imports_of(module, modules)):
            theirs = layer_of(imported, layers)
            if theirs is not None and theirs > own:
                problems.append(
                    f"{module} ({layers[own]}) imports {imported} ({layers[theirs]}), a layer above"
                )
    return problems


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
    assert "condnet.nn.loss_inputs" in graph["condnet.nn.guidance"]  # relative
    assert "condnet.engine.trainer" in graph["condnet.tools.train"]  # inside a function
    assert "condnet.engine.dist" in graph["condnet.tools.train"]  # "from ..engine import dist"
    assert "condnet.engine" in graph["condnet.tools.train"]  # ... which runs the package
    assert "condnet.nn" in graph["condnet.models.losses"]  # parent of condnet.nn.guidance
    assert "condnet.nn" not in graph["condnet.nn.guidance"]  # its own package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = {name: imports_of(name, type_checking=False) for name in MODULES}
    found = cycles(graph)
    assert not found, "import cycles (each line a group that imports itself back):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_every_module_imports_only_its_layer_and_those_below():
    problems = layer_violations(MODULES)
    assert not problems, "layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(problems)


def _write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return find_modules(root)


def test_an_upward_import_is_reported_inside_a_function_and_via_the_parent_package(tmp_path):
    modules = _write_tree(
        tmp_path,
        {
            "condnet/__init__.py": "",
            "condnet/models/__init__.py": "from . import losses\n",
            "condnet/models/losses.py": "import torch\n",
            "condnet/nn/__init__.py": "from .guidance import loss\n",
            # The shape that once slipped through: an upward import in a function body.
            "condnet/nn/guidance.py": (
                "def loss():\n    from condnet.models.losses import dice\n    return dice\n"
            ),
            # Only the parent package, at the top of the module.
            "condnet/nn/convert.py": "import condnet.models\n",
            # Relative, to a submodule: the package it runs counts too.
            "condnet/nn/warm.py": "from ..models import losses\n",
            # Downward and sideways imports are fine.
            "condnet/models/zoo.py": "from condnet.nn import guidance\nfrom . import losses\n",
        },
    )
    problems = layer_violations(modules)
    reported = {line.split(" ")[0]: line for line in problems}
    assert sorted(reported) == ["condnet.nn.convert", "condnet.nn.guidance", "condnet.nn.warm"]
    assert "imports condnet.models (condnet.models)" in reported["condnet.nn.convert"]
    guidance = [line for line in problems if line.startswith("condnet.nn.guidance ")]
    assert {line.split(" imports ")[1].split(" ")[0] for line in guidance} == {
        "condnet.models",
        "condnet.models.losses",
    }
    assert any("imports condnet.models " in line for line in problems if "nn.warm" in line)


def test_a_type_checking_import_counts_for_the_layers_but_closes_no_cycle(tmp_path):
    modules = _write_tree(
        tmp_path,
        {
            "condnet/__init__.py": "",
            "condnet/models/__init__.py": "",
            "condnet/models/a.py": "from . import b\n",
            "condnet/models/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n"
            ),
            "condnet/nn/__init__.py": (
                "import typing\nif typing.TYPE_CHECKING:\n    import condnet.models\n"
            ),
        },
    )
    assert "condnet.models.a" in imports_of("condnet.models.b", modules)
    assert "condnet.models.a" not in imports_of("condnet.models.b", modules, type_checking=False)
    graph = {name: imports_of(name, modules, type_checking=False) for name in modules}
    assert cycles(graph) == []
    assert [line.split(" ")[0] for line in layer_violations(modules)] == ["condnet.nn"]


def test_a_module_outside_every_layer_is_reported(tmp_path):
    modules = _write_tree(tmp_path, {"condnet/__init__.py": "", "condnet/extras.py": ""})
    assert layer_violations(modules, ("condnet", "condnet.ops")) == [
        "condnet.extras is in no layer; place it in LAYERS"
    ]


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
    for package in ("condnet.data", "condnet.models", "condnet.demo"):
        assert "__getattr__" not in _defines(package), package
    # Knowledge kept where it belongs: evaluation does not type-check condnet.nn, and
    # the benchmark report does not import a command line module.
    assert not any(m.startswith("condnet.nn") for m in imports_of("condnet.engine.evaluate"))
    report = ast.parse((ROOT / "benchmarks" / "report.py").read_text())
    imported = {
        node.module for node in ast.walk(report) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(name.startswith("condnet.tools") for name in imported), imported
