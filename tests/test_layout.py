"""The package layout: dependencies point one way, no import cycles, no god modules.

The rules are read from the source with ``ast`` (nothing is imported), so a violation is found
even on a code path no other test runs. Function-local imports count (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nar_plugin"

#: Layers, lowest first. A module may import modules of its own layer or of lower layers only.
#: Names are top-level parts below ``nar_plugin`` (a subpackage or a top-level module).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "config", "utils"),
    ("graph",),
    ("extract", "motifs", "lineage"),
    ("corpus",),
    ("model",),
    ("training", "evaluation"),
    ("index",),
    ("search",),
    ("integrations",),
    ("apps", "mlflow", "hf", "bulk"),
    ("cli",),
)
#: Siblings in one layer that must not import each other at all.
INDEPENDENT: tuple[tuple[str, str], ...] = (
    ("extract", "motifs"),
    ("integrations.mlflow", "integrations.hf"),
)
#: ``index`` is a store, usable without any model code: it may import only these.
INDEX_MAY_IMPORT = frozenset({"errors", "config", "utils", "index"})
#: ``nar_plugin/__init__.py`` re-exports lazily by name; it is the package's front door, not a layer.
FRONT_DOOR = "nar_plugin"

MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of ``nar_plugin`` imported anywhere in ``path`` (resolved to known module names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        # ``from a.b import c`` may import the module ``a.b.c`` or the name ``c`` of ``a.b``.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nar_plugin"):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("nar_plugin"):
                for a in node.names:
                    add(f"{target}.{a.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("nar_plugin"):
                add(arg.value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    return {m: _imports(p, m, known) for m, p in files.items()}


GRAPH = _graph()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FRONT_DOOR


def _layer(module: str) -> int:
    top = _top(module)
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: top-level part {top!r} is in no layer of tests/test_layout.py; add it")


def test_every_module_has_a_layer() -> None:
    for m in GRAPH:
        if m != FRONT_DOOR:
            _layer(m)


def test_dependencies_point_down() -> None:
    bad = []
    for m, deps in sorted(GRAPH.items()):
        if m == FRONT_DOOR:
            continue
        for d in sorted(deps):
            if d == FRONT_DOOR:
                bad.append(f"{m} imports the package front door (import the defining module)")
            elif _layer(d) > _layer(m):
                bad.append(f"{m} (layer {_top(m)}) imports {d} (layer {_top(d)}, higher)")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_index_is_standalone() -> None:
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if _top(m) == "index"
           for d in deps if _top(d) not in INDEX_MAY_IMPORT]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("a", "b"), INDEPENDENT)
def test_independent_siblings(a: str, b: str) -> None:
    def inside(m: str, p: str) -> bool:
        return m == f"nar_plugin.{p}" or m.startswith(f"nar_plugin.{p}.")

    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
           if (inside(m, a) and inside(d, b)) or (inside(m, b) and inside(d, a))]
    assert not bad, "\n".join(bad)


def test_core_never_imports_integrations() -> None:
    core = {n for layer in LAYERS[: LAYERS.index(("integrations",))] for n in layer}
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items()
           if _top(m) in core for d in deps if _top(d) in {"integrations", "apps", "cli", "mlflow", "hf"}]
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its submodules is not a cycle of *logic*: drop the edges
    # from a package to its own children, keep everything else.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    graph.pop(FRONT_DOOR, None)
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_finder_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nar_plugin.cli import main\n"
        "def f():\n    from nar_plugin.graph import ArchGraph\n"
        "    import importlib\n    importlib.import_module('nar_plugin.index')\n"
    )
    got = _imports(f, "nar_plugin.search.x", {"nar_plugin.graph", "nar_plugin.index", "nar_plugin.cli"})
    assert got == {"nar_plugin.graph", "nar_plugin.index"}


def test_no_god_modules() -> None:
    big = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_public_embed_is_always_the_function() -> None:
    """``nar_plugin.embed`` once became the submodule after ``import nar_plugin.embed``."""
    import importlib
    import subprocess
    import sys

    code = (
        "import importlib, nar_plugin\n"
        "for m in ('nar_plugin.model.inference', 'nar_plugin.hf', 'nar_plugin.search.api'):\n"
        "    importlib.import_module(m)\n"
        "assert callable(nar_plugin.embed), type(nar_plugin.embed)\n"
        "assert nar_plugin.embed.__name__ == 'embed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert importlib.import_module("nar_plugin").__all__  # the front door itself imports


def test_import_nar_plugin_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nar_plugin, nar_plugin.cli, nar_plugin.mlflow, nar_plugin.hf\n"
        "heavy = [m for m in ('torch', 'mlflow', 'transformers', 'huggingface_hub', 'timm', 'faiss', 'ray')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
