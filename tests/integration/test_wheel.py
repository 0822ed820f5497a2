"""What ships: the built wheel, installed the way the image installs it (not editable).

The rest of the suite runs on an editable install, which reads data files from the checkout and
so cannot see one missing from the wheel (issue 10 found ``devices/zigbee2mqtt.toml`` missing:
every container of the gateway and the API would have failed at start). Here the wheel is built
once, its contents are compared with the checkout, and a fresh virtual environment holding the
locked runtime dependencies and the wheel, installed as the Dockerfile installs them, migrates a
real database and builds the application.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("devices", "carewatch", "gateway", "broker", "api", "dashboards", "app", "tools")
# Deployment files that docker-compose mounts from the checkout; no code opens them.
NOT_SHIPPED: Final = ("dashboards/grafana/",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline (no build isolation) from a copy of the tracked files,
    as the Dockerfile copies them: a checkout's leftovers (``*.egg-info``, ``build/``) would
    otherwise put files into the wheel that the configuration does not."""
    source = tmp_path_factory.mktemp("source")
    for name in _git_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, timeout=300, cwd=out,
    )  # fmt: skip
    (built,) = out.glob("carewatch-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtual environment set up as the Dockerfile sets up the image:
    exactly the locked runtime dependencies (hashes checked, nothing resolved), then the wheel
    without dependencies, then ``pip check``. No dev tool is in it, so an import that only the
    development set satisfies fails here."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    lock = ROOT / "requirements" / "runtime.lock"
    for step in (
        [*pip, "install", "--require-hashes", "--no-deps", "-r", str(lock)],
        [*pip, "install", "--no-deps", str(wheel)],
        [*pip, "check"],
    ):
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
    return python


def _git_files(*paths: str) -> list[str]:
    """The files git tracks (as they are in the working tree) under ``paths``, or all."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", *paths], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _tracked_data_files() -> set[str]:
    """Every file of the packages that is not Python and that the code may open."""
    return {
        name
        for name in _git_files(*PACKAGES)
        if not name.endswith(".py") and not name.startswith(NOT_SHIPPED)
    }


def test_the_wheel_holds_every_data_file_of_the_packages(wheel: Path) -> None:
    """Catalogs, migrations, the broker configuration, templates and static files are inside."""
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    expected = _tracked_data_files()
    assert {"devices/zigbee2mqtt.toml", "broker/mosquitto.conf"} <= expected
    assert sorted(expected - inside) == []


def test_the_installed_wheel_migrates_and_builds_the_app(
    installed: Path, database_url: str, tmp_path: Path
) -> None:
    """From the installed wheel alone: the console entry point migrates a real database, and
    the gateway's, broker's and API's modules load their data files."""
    env = {**os.environ, "CAREWATCH_DATABASE_URL": database_url}
    env.pop("PYTHONPATH", None)
    migrate = subprocess.run(
        [str(installed), "-m", "app.cli", "migrate"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    assert "schema up to date" in migrate.stdout
    probe = (
        "import json, gateway.ingest, gateway.service, broker.run, broker.mosquitto\n"
        "from importlib import resources\n"
        "from app.web import create_app\n"
        "from carewatch.settings import Settings\n"
        "from devices.catalog import DEFAULT_CATALOG\n"
        "from devices.zigbee2mqtt import DEFAULT_MAPPING\n"
        "app = create_app(Settings())\n"
        "print(json.dumps({'gateway': gateway.__file__,\n"
        "                  'conf': str(broker.mosquitto.shipped_config()),\n"
        "                  'kinds': len(DEFAULT_CATALOG),\n"
        "                  'api': sorted(app.openapi()['paths']),\n"
        "                  'templates': str(resources.files('dashboards') / 'templates')}))\n"
    )
    loaded = subprocess.run(
        [str(installed), "-c", probe],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    facts = json.loads(loaded.stdout)
    site_packages = str(installed.parent.parent)
    assert facts["gateway"].startswith(site_packages)
    assert facts["conf"].startswith(site_packages)
    assert Path(facts["conf"]).is_file()
    assert facts["kinds"] >= 8
    assert {"/api/v1/alerts", "/api/v1/devices", "/api/v1/usage"} <= set(facts["api"])
    assert facts["templates"].startswith(site_packages)
    assert (Path(facts["templates"]) / "board.html").is_file()
