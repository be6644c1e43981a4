"""Imports go one way (issue 18, item 7): the package's import graph, module-level and
function-level imports alike, has no cycle; the command line is a leaf nothing imports."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules():
    """``{dotted name: path}`` of jablate's modules and its bridges (jablate.bridges)."""
    found = {}
    for folder, prefix in ((REPO / "jablate", "jablate"), (REPO / "bridges",
                                                           "jablate.bridges")):
        for path in folder.glob("*.py"):
            found[prefix if path.stem == "__init__" else f"{prefix}.{path.stem}"] = path
    return found


def _graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                target = (base + ("." + node.module if node.module else "")) if node.level \
                    else (node.module or "")
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert {"jablate.cli", "jablate.genome_run", "jablate.bridges.torch",
            "jablate.frontdoor"} <= set(graph)
    assert _cycles(graph) == []
    # the three circles of the review, each broken
    assert "jablate.cli" not in graph["jablate.genome_run"]
    assert "jablate.bridges.torch" not in graph["jablate.bridges.torch_export"]
    assert "jablate.frontdoor" not in graph["jablate.bridges.torch"]


def test_the_command_line_is_a_leaf():
    graph = _graph()
    importers = sorted(m for m, deps in graph.items() if "jablate.cli" in deps)
    assert importers == ["jablate.__main__"]


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
