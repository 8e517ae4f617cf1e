"""The server's and the Python client's modules import each other in layers: no import cycle.

A cycle means neither module can be read, tested or replaced without the other, and it is only
a matter of time before one import order breaks at start-up. Every import counts as an edge:
top-level ones, those under `if TYPE_CHECKING:` (the type checker still needs both modules) and
function-local ones (a local import that exists to dodge a cycle is still the cycle). The graph
is read with `ast`, so nothing is imported and a module's side effects cannot hide an edge. (The
one dynamic import, of the hook module the configuration names, loads user code, not ours.)

Two more rules keep the layers of docs/architecture.md: `app/routes/` only mounts, so only
`app.main` imports it; and the server never imports the clients' package, nor they the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

# Each root is the directory that holds the top-level package(s) it lists.
PACKAGES = {"app": ROOT, "switchboard_client": ROOT / "clients" / "python" / "src"}


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            found[module_name(path, base)] = path
    return found


def resolve(importer: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `importer`."""
    if level == 0:
        return name or ""
    parts = importer.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules `name` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in known else source)
    edges = set()
    for target in targets:
        # `import a.b.c` of a name that is not a module (an attribute) means its nearest module.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None; depth-first, in a stable order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done (no cycle through it)
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def cycles(graph: dict[str, set[str]], limit: int = 20) -> list[list[str]]:
    """Up to ``limit`` cycles, each found after cutting the last edge of the ones before it."""
    graph = {name: set(targets) for name, targets in graph.items()}
    found: list[list[str]] = []
    while len(found) < limit and (cycle := find_cycle(graph)):
        found.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return found


def test_the_graph_is_read_from_both_packages() -> None:
    graph = import_graph()
    assert "app.hub" in graph["app.session"]
    assert "switchboard_client.realtime.subscription" in graph["switchboard_client.realtime.protocol"]
    # Imports under TYPE_CHECKING and inside functions count too.
    assert "app.outbox.relay" in graph["app.main"]


def test_relative_imports_resolve_against_the_importing_package() -> None:
    assert resolve("app.broker.memory", False, 1, "base") == "app.broker.base"
    assert resolve("app.broker", True, 1, "base") == "app.broker.base"
    assert resolve("app.routes.ws", False, 2, "session") == "app.session"
    assert resolve("app.routes.ws", False, 1, None) == "app.routes"


def test_find_cycle_names_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b", "a"], ["c", "d", "c"]]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_only_main_imports_the_routes() -> None:
    graph = import_graph()
    found = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name != "app.main" and not name.startswith("app.routes")
        for target in targets
        if target.startswith("app.routes")
    )
    assert not found, "app/routes/ only mounts; import from the layer below it instead:\n" + "\n".join(found)


def test_the_server_and_the_clients_never_import_each_other() -> None:
    found = sorted(
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if name.partition(".")[0] != target.partition(".")[0]
    )
    assert not found, "\n".join(found)
