"""devices/ is the pure core: importing it pulls in no I/O library."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import devices

# The I/O side of the project: event loops, database, MQTT, web. Top-level package names.
FORBIDDEN = {
    "asyncio",
    "psycopg",
    "psycopg_pool",
    "paho",
    "aiomqtt",
    "mqtt5",
    "gmqtt",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "pydantic_settings",
}

# Every module of the package, so that one added later (rules, simulator, ...) is checked too.
MODULES = ["devices"] + [
    f"devices.{module.name}" for module in pkgutil.iter_modules(devices.__path__)
]


def imported_after(module: str) -> set[str]:
    """The top-level packages in sys.modules after importing `module` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({name.partition('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(completed.stdout))


def test_the_core_modules_are_checked() -> None:
    """The module list includes the catalog and the envelope parser."""
    assert {"devices", "devices.catalog", "devices.envelope"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_devices_pulls_in_no_io_library(module: str) -> None:
    """Importing a devices module in a fresh interpreter loads no asyncio, database, MQTT or web
    library."""
    loaded = imported_after(module)
    assert module.partition(".")[0] in loaded
    assert not loaded & FORBIDDEN, f"{module} imports {sorted(loaded & FORBIDDEN)}"
