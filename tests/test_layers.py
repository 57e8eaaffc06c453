"""The package's layers: no module imports from a higher layer or from a peer of its own layer,
and no modules import each other in a cycle, counting function-level (lazy) imports too.

:data:`LAYERS` is the one written statement of the architecture (docs/ARCHITECTURE.md copies it).
A *unit* is a subpackage (``data``) or a top-level module (``cli``) of ``taxonlens``; ``taxonlens``
itself is the package's ``__init__`` (the public API, top). Units in one layer are independent
peers: neither imports the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "taxonlens"

#: bottom first
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("textio", "journal", "resources", "choices", "exports"),  # choices: closed sets of string options (StrEnum)
    ("tables",),  # CSV / TSV / JSON lines / Parquet rows, read and written one way
    ("taxonomy", "models"),  # the tree; encoders and LMMs (presets, hub files)
    ("data",),  # records, manifests, image folders, VQA benchmarks, TreeOfLife label sets
    ("knowledge", "evaluate"),  # attribute mining/extraction/descriptions; metrics and prediction scoring
    ("synthworld", "recognize"),  # the procedural world; classifiers and decoders
    ("index", "train"),  # exemplar memories; training loops
    ("predict",),  # the Recognizer and prediction files
    ("bench", "demo", "serve"),  # serve: the HTTP service over predict
    ("cli",),
    ("__main__", "taxonlens"),
)
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(module: str) -> Iterator[tuple[int, str]]:
    """``(line, imported taxonlens module)`` for every import statement anywhere in ``module``;
    ``from package import name`` counts as importing the submodule ``package.name`` when it is one."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target.split(".")[0] == "taxonlens":
                yield node.lineno, target


GRAPH = {module: list(_imports(module)) for module in MODULES}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


def test_every_unit_has_one_layer() -> None:
    units = {_unit(m) for m in MODULES}
    placed = [u for layer in LAYERS for u in layer]
    assert len(placed) == len(set(placed)), "a unit is listed twice in LAYERS"
    assert units == set(placed), f"not in LAYERS: {sorted(units - set(placed))}; gone: {sorted(set(placed) - units)}"


def test_no_import_from_a_higher_layer_or_a_peer() -> None:
    wrong = []
    for module, imports in GRAPH.items():
        mine = _unit(module)
        for line, target in imports:
            theirs = _unit(target)
            if theirs != mine and LAYER_OF[theirs] >= LAYER_OF[mine]:
                kind = "a peer" if LAYER_OF[theirs] == LAYER_OF[mine] else "a higher layer"
                wrong.append(f"{_where(module, line)} ({module}) imports {target}: {mine!r} (layer {LAYER_OF[mine]}) "
                             f"may not import {kind}, {theirs!r} (layer {LAYER_OF[theirs]})")
    assert not wrong, "\n".join(wrong)


def _cycle(graph: dict[str, list[tuple[int, str]]]) -> list[tuple[str, int, str]]:
    """One import cycle as ``(module, line, imported module)`` steps, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[tuple[str, int, str]] = []

    def visit(module: str) -> list[tuple[str, int, str]]:
        state[module] = 1
        for line, target in graph[module]:
            stack.append((module, line, target))
            if state.get(target) == 1:
                start = next(i for i, step in enumerate(stack) if step[0] == target)
                return stack[start:]
            if target not in state and (found := visit(target)):
                return found
            stack.pop()
        state[module] = 2
        return []

    for module in graph:
        if module not in state and (found := visit(module)):
            return found
    return []


def test_no_import_cycle() -> None:
    cycle = _cycle(GRAPH)
    assert not cycle, "import cycle:\n" + "\n".join(f"{_where(m, line)} ({m}) imports {t}" for m, line, t in cycle)


def test_the_checks_see_lazy_imports_and_cycles() -> None:
    assert (1, "taxonlens.cli") in GRAPH["taxonlens.__main__"]
    lazy = {target for _, target in GRAPH["taxonlens.cli.demo"]}
    assert "taxonlens.demo" in lazy  # imported inside a command function
    assert _cycle({"a": [(3, "b")], "b": [(7, "a")]}) == [("a", 3, "b"), ("b", 7, "a")]
