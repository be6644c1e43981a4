"""Imports go one way (issue 18, item 7): the package's import graph, module-level and
function-level imports alike, has no cycle; the command line is a leaf nothing imports."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules():
    """``{dotted name: path}`` of jablate's modules, its subpackages' included."""
    found = {}
    for path in (REPO / "jablate").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if path.stem == "__init__" else parts)] = path
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
    assert {"jablate.cli", "jablate.genome.run", "jablate.bridges.torch",
            "jablate.models.frontdoor"} <= set(graph)
    assert _cycles(graph) == []
    # the three circles of the review, each broken
    assert "jablate.cli" not in graph["jablate.genome.run"]
    assert "jablate.bridges.torch" not in graph["jablate.bridges.torch_export"]
    assert "jablate.models.frontdoor" not in graph["jablate.bridges.torch"]


def test_the_command_line_is_a_leaf():
    graph = _graph()
    importers = sorted(m for m, deps in graph.items() if "jablate.cli" in deps)
    assert importers == ["jablate.__main__"]


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _rooms(graph):
    """The subpackages ("rooms": _core, bridges, models, engine, ...; the package's own
    __init__ is "jablate") and which rooms each one's modules import."""
    room = lambda m: m.split(".")[1] if "." in m else "jablate"
    rooms = {room(m): set() for m in graph}
    for m, deps in graph.items():
        rooms[room(m)] |= {room(d) for d in deps if room(d) != room(m)}
    return rooms


def test_data_flows_one_way_between_the_rooms():
    rooms = _rooms(_graph())
    assert {"_core", "bridges", "models", "engine", "functional", "incremental",
            "attribution", "api", "genome", "cli", "demo"} <= set(rooms)
    assert _cycles(rooms) == []
    assert rooms["_core"] == set()            # the core imports no other room
    assert rooms["bridges"] == {"_core"}      # torch's bridges only the core
    assert "api" not in rooms["engine"] | rooms["incremental"] | rooms["models"]
