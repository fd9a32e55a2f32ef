"""The package's layers only point down: no import cycle between modules, nor between its parts.

A part is a top-level module (tfcluster/run.py) or a sub-package (tfcluster/data/). Every import
of a tfcluster module counts, at the top of a file or inside a function. With no cycle among the
parts, they stack in layers where every import points to a lower one.
"""

import ast
import collections
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules() -> dict:
    """{dotted module name: path} of every module under tfcluster/."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "tfcluster")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return out


def _imports(modules: dict) -> dict:
    """{module: set of tfcluster modules it imports} (an imported name is resolved to its module)."""

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = collections.defaultdict(set)
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("tfcluster") else ""
                if target and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_modules_or_parts():
    graph = _imports(_modules())
    assert graph["tfcluster.run"] and graph["tfcluster.cluster"]  # the reader sees imports at all
    assert _cycles(graph) == []
    parts = collections.defaultdict(set)
    edges = collections.defaultdict(list)
    for module, targets in graph.items():
        for target in targets:
            if _part(module) != _part(target):
                parts[_part(module)].add(_part(target))
                edges[(_part(module), _part(target))].append(f"{module} -> {target}")
    cycles = _cycles(parts)
    detail = [edge for cycle in cycles for a in cycle for b in cycle for edge in edges.get((a, b), [])]
    assert cycles == [], detail


def test_the_reader_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
