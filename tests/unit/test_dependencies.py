"""Honest dependencies: what the packages import is declared, and what is declared is imported.

Read from the source with ``ast`` (imports inside functions included), mapped to distributions
through the installed metadata, and compared with ``pyproject.toml``. The lock files are
checked to pin every declared distribution, each with hashes, so that ``scripts/setup``, CI
and the image (``pip install --require-hashes``) install exactly what was tested.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = (
    "devices",
    "carewatch",
    "gateway",
    "broker",
    "api",
    "notifier",
    "dashboards",
    "app",
    "tools",
)
# Distributions the code uses without importing them by name: extras FastAPI and uvicorn load
# when asked (form parsing), and the psycopg C implementation psycopg picks at import.
USED_WITHOUT_IMPORT: Final = {
    "python-multipart": "FastAPI parses form posts (login) with it",
    "psycopg-binary": "psycopg[binary]: the C implementation psycopg loads itself",
    "jinja2": "the pages render through starlette's Jinja2Templates",
}
# Dev tools run as commands or pytest plugins, not imported by the packages.
DEV_ONLY: Final = "dev"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _canonical(match.group(1))


def _project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def _declared_runtime() -> set[str]:
    return {_requirement_name(r) for r in _project()["dependencies"]}


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(PACKAGES) - set(sys.stdlib_module_names)


def _imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the top-level modules of it that the packages import."""
    by_module = packages_distributions()
    found: dict[str, set[str]] = {}
    for module in _imported_top_level_modules():
        distributions = by_module.get(module)
        assert distributions, f"{module!r} is imported but no installed distribution provides it"
        for distribution in distributions:
            found.setdefault(_canonical(distribution), set()).add(module)
    return found


def test_every_imported_third_party_package_is_declared() -> None:
    """A package imported by name is a dependency of its own, never left to another's pins."""
    undeclared = sorted(set(_imported_distributions()) - _declared_runtime())
    assert undeclared == []


def test_every_declared_runtime_dependency_is_used() -> None:
    """Nothing is installed into the image that no code needs."""
    unused = sorted(_declared_runtime() - set(_imported_distributions()) - set(USED_WITHOUT_IMPORT))
    assert unused == []


def _locked(lock: str) -> dict[str, str]:
    """Name -> the whole entry (version line with its hashes) of a lock file."""
    entries: dict[str, str] = {}
    text = (ROOT / "requirements" / lock).read_text()
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        if entry.startswith("#") or not entry.strip():
            continue
        entries[_requirement_name(entry)] = entry
    return entries


def test_the_lock_files_pin_every_declared_dependency_with_hashes() -> None:
    """runtime.lock covers the runtime set, dev.lock both sets, build.lock the build system."""
    project = _project()
    dev = {_requirement_name(r) for r in project["optional-dependencies"][DEV_ONLY]}
    build = {_requirement_name(r) for r in _build_requires()}
    for lock, names in (
        ("runtime.lock", _declared_runtime()),
        ("dev.lock", _declared_runtime() | dev),
        ("build.lock", build),
    ):
        entries = _locked(lock)
        assert sorted(names - set(entries)) == [], lock
        for name, entry in entries.items():
            assert re.search(r"==\S+", entry.splitlines()[0]), (lock, name)
            assert "--hash=sha256:" in entry, (lock, name)


def test_the_image_and_the_development_set_agree_on_versions() -> None:
    """The image runs the versions the tests ran: runtime.lock is a subset of dev.lock."""
    dev = {name: entry.split()[0] for name, entry in _locked("dev.lock").items()}
    runtime = {name: entry.split()[0] for name, entry in _locked("runtime.lock").items()}
    assert {name: pin for name, pin in runtime.items() if dev.get(name) != pin} == {}


def _build_requires() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        requires: list[str] = tomllib.load(file)["build-system"]["requires"]
    return requires
