"""The rooms and their floors: imports run one way, and the services never load the tools.

The floors, bottom to top (README, "Where things are"):

    devices  <-  carewatch  <-  gateway, broker, api  <-  dashboards  <-  tools  <-  app

A module may import its own package and any package on a lower floor, never one on its own
floor (the services stay apart) or above. The tools (benchmarks, demo, simulator) start the
services as processes and never import the command line; ``app.cli`` imports each tool lazily,
only for its own command. ``__main__`` modules are the doorways that ``python -m gateway`` /
``python -m api`` run: they stand above every floor wherever their file sits.

The check reads every import statement, at the top of a module or inside a function, so an
import moved into a function to dodge a circle is still caught.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]

FLOORS: Final[dict[str, int]] = {
    "devices": 0,
    "carewatch": 1,
    "gateway": 2,
    "broker": 2,
    "api": 2,
    "dashboards": 3,
    # Sends the API's alert JSON (api.alert_queries, api.schemas), as the pages show it.
    "notifier": 3,
    "tools": 4,
    "app": 5,
}
DOORWAY_FLOOR: Final = max(FLOORS.values()) + 1

# What each service process runs; none of them may load a tool (benchmarks, demo, simulator).
SERVICE_MODULES: Final = (
    "gateway.service",
    "broker.run",
    "broker.commands",
    "app.web",
    "app.server",
    "notifier.service",
    "carewatch.db.migrate",
    "carewatch.admin",
)


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: who imports what, and where."""

    importer: str
    imported: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    """``api/routes/alerts.py`` -> ``api.routes.alerts``; an ``__init__`` is its package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports() -> Iterator[Import]:
    """Every import of a project package by a project module, relative imports resolved."""
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = module_name(path)
            is_package = path.name == "__init__.py"
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(importer, alias.name, (), node.lineno)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        parts = importer.split(".")
                        keep = len(parts) - node.level + (1 if is_package else 0)
                        base = ".".join([*parts[:keep], *([base] if base else [])])
                    names = tuple(alias.name for alias in node.names)
                    yield Import(importer, base, names, node.lineno)


def floor_of(module: str) -> int:
    """The floor of a module; a ``__main__`` doorway stands above them all."""
    if module.rpartition(".")[2] == "__main__":
        return DOORWAY_FLOOR
    return FLOORS[module.partition(".")[0]]


IMPORTS: Final = [i for i in project_imports() if i.imported.partition(".")[0] in FLOORS]


def test_the_walk_sees_the_projects_imports() -> None:
    """The checks below read real imports: the gateway's service imports the kernel's settings."""
    assert any(
        i.importer == "gateway.service" and i.imported.startswith("carewatch") for i in IMPORTS
    )
    assert len(IMPORTS) > 200


def test_imports_run_down_the_floors_only() -> None:
    """No module imports a package on its own floor (other than its own) or on a floor above."""
    upward = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if (theirs := i.imported.partition(".")[0]) != i.importer.partition(".")[0]
        and floor_of(i.importer) <= FLOORS[theirs]
    ]
    assert upward == []


def test_nothing_imports_a_doorway() -> None:
    """``__main__`` modules are run, never imported."""
    assert [i for i in IMPORTS if i.imported.endswith("__main__")] == []


def test_no_private_name_crosses_a_package() -> None:
    """A name with a leading underscore is imported only inside its own package."""
    private = [
        f"{i.importer}:{i.line} imports {name} from {i.imported}"
        for i in IMPORTS
        for name in i.names
        if name.startswith("_") and i.imported.partition(".")[0] != i.importer.partition(".")[0]
    ]
    assert private == []


def test_pages_do_not_reach_into_api_routes() -> None:
    """The pages use the API's queries and dependencies, never its route modules."""
    into_routes = [
        f"{i.importer}:{i.line}"
        for i in IMPORTS
        if i.importer.startswith("dashboards")
        and (i.imported.startswith("api.routes") or (i.imported == "api" and "routes" in i.names))
    ]
    assert into_routes == []


def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` is ``pkg.mod``)."""
    known = {module_name(path) for package in FLOORS for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {module: set() for module in known}
    for i in IMPORTS:
        targets = {f"{i.imported}.{name}" for name in i.names} & known or {i.imported}
        graph[i.importer] |= {target for target in targets if target in known}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    """No module reaches itself through imports, inside a package or across packages (a
    package's ``__init__`` importing its own submodules is the one exception Python makes
    natural, and there is none here)."""
    assert _cycles(_module_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a -> b -> a is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_services_do_not_load_the_tools(module: str) -> None:
    """Importing what a service runs loads no benchmark, demo, simulator or private instance."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    loaded = json.loads(completed.stdout)
    assert [name for name in loaded if name == "tools" or name.startswith("tools.")] == []
    assert "devices.simulator" not in loaded
