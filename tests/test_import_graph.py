"""The package's import graph: no import circles, and no module reaching into another's private names.

Every module of the installed package is read (never imported: the GIMP plug-in only imports
inside GIMP) from the folders Python finds for the subpackages pyproject declares, so ``core``,
``training``, ``vapoursynth`` and ``gimp`` are walked under the names they are installed as.
Imports inside functions count as well: a circle that closes only at call time still ties two
modules together.  Imports under ``if TYPE_CHECKING:`` never run and do not count.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

ROOT = "fbcnn_plugins"


def declared_packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def package_modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name, each with its source file."""
    modules: dict[str, Path] = {}
    for package in declared_packages():
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed as a package"
        if spec.origin and spec.origin.endswith("__init__.py"):
            modules[package] = Path(spec.origin)
        for folder in spec.submodule_search_locations:
            for source in sorted(Path(folder).glob("*.py")):
                if source.name != "__init__.py":
                    modules[f"{package}.{source.stem}"] = source
    return modules


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class ModuleImports:
    """What one module imports at run time, and the other modules' private names it touches."""

    name: str
    is_package: bool
    known: set[str]
    targets: set[str] = field(default_factory=set)
    private_uses: list[str] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def absolute(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = self.package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def owns(self, module: str) -> bool:
        """Whether ``module`` is this module or lies inside its package (private submodules are the package's own)."""
        return module == self.name or module.startswith(self.package + ".")


def read_imports(name: str, source: Path, known: set[str]) -> ModuleImports:
    found = ModuleImports(name, source.name == "__init__.py", known)
    tree = ast.parse(source.read_text(), str(source))
    bound: dict[str, str] = {}  # local name -> one of our modules it stands for

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    found.targets.add(alias.name)
                    _check_module_path(alias.name, node)
                    top = alias.name.split(".")[0]  # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b
                    bound[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            module = found.absolute(node.module, node.level)
            if _ours(module):
                _check_module_path(module, node)
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    if submodule in known:
                        found.targets.add(submodule)
                        bound[alias.asname or alias.name] = submodule
                        if is_private(alias.name) and not found.owns(submodule):
                            found.private_uses.append(f"line {node.lineno}: from {module} import {alias.name}")
                    else:
                        found.targets.add(module)
                        if is_private(alias.name) and module != name:
                            found.private_uses.append(f"line {node.lineno}: from {module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = _dotted(node.value)
            if dotted is not None:
                head, _, rest = dotted.partition(".")
                if head in bound:
                    module = ".".join(filter(None, [bound[head], rest]))
                    if module in known and module != name:
                        found.private_uses.append(f"line {node.lineno}: {dotted}.{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    def _check_module_path(module: str, node: ast.AST) -> None:
        parts = module.split(".")
        for depth in range(1, len(parts)):
            if is_private(parts[depth]) and not found.owns(".".join(parts[: depth + 1])):
                found.private_uses.append(f"line {node.lineno}: import of {module}")

    visit(tree)
    found.targets.discard(name)
    return found


def _ours(module: str) -> bool:
    return module == ROOT or module.startswith(ROOT + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def import_graph() -> dict[str, ModuleImports]:
    modules = package_modules()
    known = set(modules)
    return {name: read_imports(name, source, known) for name, source in modules.items()}


def import_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return circles


@pytest.fixture(scope="module")
def graph() -> dict[str, ModuleImports]:
    return import_graph()


def test_the_walk_sees_every_room_of_the_package(graph):
    for expected in ("fbcnn_plugins.core.restorer", "fbcnn_plugins.training.chains", "fbcnn_plugins.gimp.worker",
                     "fbcnn_plugins.vapoursynth.filter", "fbcnn_plugins.files.images", "fbcnn_plugins.ray.restore",
                     "fbcnn_plugins.batch", "fbcnn_plugins.cli.restore_cmd"):
        assert expected in graph
    assert "fbcnn_plugins.batch" in graph["fbcnn_plugins.cli.restore_cmd"].targets
    assert "fbcnn_plugins.batch" in graph["fbcnn_plugins.ray.restore"].targets


def test_no_import_circles(graph):
    edges = {name: {t for t in module.targets if t in graph} for name, module in graph.items()}
    assert import_circles(edges) == []


def test_no_module_uses_another_modules_private_names(graph):
    uses = {name: module.private_uses for name, module in graph.items() if module.private_uses}
    assert uses == {}


def test_the_checks_catch_a_circle_and_a_private_import(tmp_path):
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(circle) == [["a", "b", "c"]]
    source = tmp_path / "probe.py"
    source.write_text(
        "import fbcnn_plugins.cli.restore_cmd as commands\n"
        "from fbcnn_plugins.ray import restore\n"
        "def later():\n"
        "    from fbcnn_plugins.core.network import _hidden, FBCNN\n"
        "    return commands._helper, restore._worker_shape, FBCNN\n"
    )
    known = {"fbcnn_plugins.cli.restore_cmd", "fbcnn_plugins.ray.restore", "fbcnn_plugins.core.network",
             "fbcnn_plugins.probe"}
    found = read_imports("fbcnn_plugins.probe", source, known)
    assert found.targets == {"fbcnn_plugins.cli.restore_cmd", "fbcnn_plugins.ray.restore", "fbcnn_plugins.core.network"}
    assert found.private_uses == ["line 4: from fbcnn_plugins.core.network import _hidden",
                                  "line 5: commands._helper", "line 5: restore._worker_shape"]


def test_every_module_lives_in_a_room_and_the_scripts_import_only_modules_that_exist(graph):
    # fbcnn_plugins/ itself holds only its __init__: file formats in files/, batches in batch/, Ray in ray/,
    # the command line in cli/, the degradation model in training/ (see README's layout table).
    loose = sorted(name for name in graph if name.count(".") == 1 and name.rpartition(".")[2] not in
                   {"batch", "cli", "files", "ray", "models", "core", "gimp", "vapoursynth", "training"})
    assert loose == []
    known = set(graph)
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        found = read_imports(f"benchmarks.{script.stem}", script, known)
        assert found.targets <= known, (script.name, found.targets - known)
        assert found.private_uses == [], script.name
    assert {"fbcnn_plugins.training.chains"} <= read_imports(
        "benchmarks.bench_chains", REPO / "benchmarks" / "bench_chains.py", known).targets
