"""The import structure: the three packages stay layered and no import runs back up or round in a circle.

Layering (the developers' guide): ``search_spaces`` at the bottom, ``strategies`` on it (no detector code),
``hitdet`` on both. Inside ``hitdet`` a *room* is a top-level module or a sub-package (``hitdet.training``,
``hitdet.pretrain``, ``hitdet.data``, ...): the rooms' import graph must have no cycle, so that every
room can be read knowing only the rooms below it. Every import counts, also those inside functions
(they are how a module avoids a slow import, not a licence to depend on a room above it); only
``if TYPE_CHECKING:`` blocks are left out. The graph is read from the source text with ``ast``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search_spaces", "strategies", "hitdet")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The modules ``module`` imports (``from X import Y`` counts as X.Y when that is a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports: no dependency at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def room(module: str) -> str:
    """``search_spaces``/``strategies`` are one room each; in hitdet, a top-level module or sub-package."""
    parts = module.split(".")
    return parts[0] if parts[0] != "hitdet" else ".".join(parts[:2])


def module_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set(_imports(tree, name, path.name == "__init__.py"))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def room_graph() -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for name, targets in module_graph().items():
        rooms.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    return rooms


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_packages_are_layered() -> None:
    """search_spaces imports neither strategies nor hitdet; strategies does not import hitdet."""
    below = {"search_spaces": set(), "strategies": {"search_spaces"}, "hitdet": {"search_spaces", "strategies"}}
    wrong = [
        f"{name} imports {target}"
        for name, targets in module_graph().items()
        for target in targets
        if (a := name.split(".")[0]) != (b := target.split(".")[0]) and b not in below[a]
    ]
    assert wrong == []


def test_no_room_imports_back_up() -> None:
    """No cycle between rooms: e.g. the runners of hitdet.training never import hitdet.pretrain, which imports them."""
    assert cycles(room_graph()) == []


def test_no_module_cycle_in_search_spaces() -> None:
    """Inside search_spaces, the bottom package, modules import each other without a cycle too (the kinds'
    registry included: a neck or detector kind registers itself; nothing below imports it back)."""
    graph = {name: {t for t in targets if t.startswith("search_spaces.")} for name, targets in module_graph().items()
             if name.startswith("search_spaces.")}
    assert cycles(graph) == []


def test_the_check_sees_a_cycle() -> None:
    """The checker itself: a two-room cycle and a function-level import are found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    tree = ast.parse("def f():\n    from hitdet.pretrain.weights import x\n")
    assert "hitdet.pretrain.weights" in set(_imports(tree, "hitdet.training.runner", False))
