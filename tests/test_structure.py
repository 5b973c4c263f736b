"""The package's size limits and import graph, checked on its source (no import made):
no module over 400 lines, no function over 60 lines (the vendored viewer is JavaScript,
not counted), and no import cycle between any two modules, sub-packages' included and
imports inside functions included. The layering itself is import-linter's
(test_layers.py, `make lint`); this test also sees cycles inside ``pipeline.stages``."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
MAX_MODULE, MAX_FUNCTION = 400, 60


def modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package, by dotted name: (file, parsed tree)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


def imports(name: str, path: Path, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else \
                    name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    # a module's own package is imported with it, not by it: no edge to an ancestor
    return {m for m in found & known if m != name and not name.startswith(m + ".")}


def test_no_module_over_400_lines() -> None:
    big = {name: path.read_text(encoding="utf-8").count("\n")
           for name, (path, _) in modules().items()}
    assert {n: size for n, size in big.items() if size > MAX_MODULE} == {}


def test_no_function_over_60_lines() -> None:
    long = [f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, (_, tree) in modules().items() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    assert long == []


def test_no_import_cycle_between_modules() -> None:
    found = modules()
    graph = {name: imports(name, path, tree, set(found))
             for name, (path, tree) in found.items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming a cycle


def test_the_checks_see_a_cycle_and_a_long_function() -> None:
    """The checks above are not vacuous: a made-up cycle and a 61-line function fail."""
    graph = {"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.a"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a cycle was not seen")
    tree = ast.parse("def f():\n" + "    x = 1\n" * 60)
    lazy = ast.parse("def f():\n    from pipeline import video\n")
    assert tree.body[0].end_lineno - tree.body[0].lineno + 1 == 61
    assert imports("pipeline.output", Path("output.py"), lazy,
                   {"pipeline.output", "pipeline.video"}) == {"pipeline.video"}
    assert len(modules()) > 50
