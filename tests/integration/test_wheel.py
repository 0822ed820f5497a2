"""What ships: the built wheel, installed the way the image installs it (not editable).

The rest of the suite runs on an editable install, which reads data files from the checkout and
so cannot see one missing from the wheel (issue 10 found ``devices/zigbee2mqtt.toml`` missing:
every container of the gateway and the API would have failed at start). Here the wheel is built
once, its contents are compared with the checkout, and a fresh virtual environment holding the
locked runtime dependencies and the wheel, installed as the Dockerfile installs them, migrates a
real database and builds the application.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import httpx
import psycopg
import pytest

from carewatch.processes import ChildProcess, free_port, wait_until_listening
from devices.catalog import Rule
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tools.local.certificates import ensure_authority, issue_server_certificate

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("devices", "carewatch", "gateway", "broker", "api", "dashboards", "app", "tools")


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
    return {name for name in _git_files(*PACKAGES) if not name.endswith(".py")}


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


def test_the_installed_services_carry_an_alarm_from_a_device_over_tls_to_the_board(
    installed: Path, database_url: str, tmp_path: Path
) -> None:
    """The end-to-end smoke of what ships, each service started by the installed console
    script as docker-compose starts it (migrate, broker run, gateway, api): a device connects
    over TLS with its own credentials and a verified certificate, its alarm press is stored and
    reaches ``/api/v1/alerts``, and the board page is served to the signed-in caregiver."""
    carewatch = str(installed.parent / "carewatch")
    tls = ensure_authority(tmp_path / "tls")
    issue_server_certificate(tls)
    env = {**os.environ, "CAREWATCH_DATABASE_URL": database_url}
    env.pop("PYTHONPATH", None)

    def admin_command(*argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [carewatch, *argv], input=stdin, capture_output=True, text=True, timeout=120,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout

    gateway_password = secrets.token_urlsafe(18)
    admin_command("migrate")
    admin_command("org", "add", "smoke-org", "--name", "Smoke")
    admin_command("site", "add", "smoke-site", "--org", "smoke-org", "--name", "Smoke house")
    admin_command(
        "user", "add", "nurse", "--org", "smoke-org", "--role", "caregiver", "--password-stdin",
        stdin=f"{SMOKE_PASSWORD}\n",
    )  # fmt: skip
    admin_command(
        "broker", "account", "set", "carewatch.gateway", "--role", "gateway",
        "--password-stdin", stdin=f"{gateway_password}\n",
    )  # fmt: skip
    plain_port, tls_port, api_port, metrics_port = (free_port() for _ in range(4))
    tls_url = f"mqtts://localhost:{tls_port}"
    added = admin_command(
        "device", "add", "smoke-alarm-1", "--kind", "alarm_button", "--site", "smoke-site",
        "--mqtt-url", tls_url,
    )  # fmt: skip
    device_password = re.search(r"password:\s+(\S+)", added)
    assert device_password, added
    assert tls_url in added

    logs = tmp_path / "logs"
    logs.mkdir()
    service_env = {
        **env,
        "CAREWATCH_MQTT_URL": f"mqtts://carewatch.gateway:{gateway_password}@localhost:{tls_port}",
        "CAREWATCH_MQTT_CA_FILE": str(tls.ca_file),
        "CAREWATCH_METRICS_PORT": str(metrics_port),
        "CAREWATCH_GATEWAY_CLIENT_ID": "smoke-gateway",
    }
    broker_argv = [
        carewatch, "broker", "run", "--dir", str(tmp_path / "broker"),
        "--host", "127.0.0.1", "--port", str(plain_port),
        "--tls-port", str(tls_port), "--certfile", str(tls.certfile), "--keyfile", str(tls.keyfile),
    ]  # fmt: skip
    with contextlib.ExitStack() as services:
        broker = services.enter_context(
            ChildProcess("broker", broker_argv, log_path=logs / "broker.log", env=env)
        )
        assert wait_until_listening(tls_port, timeout_s=30, still_starting=broker.is_running), (
            broker.log_tail()
        )
        gateway = services.enter_context(
            ChildProcess("gateway", [carewatch, "gateway"], log_path=logs / "gateway.log",
                         env=service_env)
        )  # fmt: skip
        api = services.enter_context(
            ChildProcess(
                "api", [carewatch, "api", "--host", "127.0.0.1", "--port", str(api_port)],
                log_path=logs / "api.log", env=service_env,
            )
        )  # fmt: skip
        base = f"http://127.0.0.1:{api_port}"
        _wait_for(lambda: _answers(f"{base}/readyz"), "the API to be ready", api)
        _wait_for(lambda: _gateway_subscribed(metrics_port), "the gateway to subscribe", gateway)

        published = publish_all(
            f"mqtts://smoke-alarm-1:{device_password.group(1)}@localhost:{tls_port}",
            [(events_topic("smoke-alarm-1"), envelope("smoke-press-1", "alarm.pressed"))],
            ca_file=str(tls.ca_file),
        )
        assert published == 1

        with httpx.Client(base_url=base, timeout=10) as client:
            signed_in = client.post(
                "/login", data={"username": "nurse", "password": SMOKE_PASSWORD},
                follow_redirects=False,
            )  # fmt: skip
            assert signed_in.status_code == 303, signed_in.text
            alarms = _wait_for(
                lambda: [
                    alert
                    for alert in client.get("/api/v1/alerts").json()
                    if alert["device_id"] == "smoke-alarm-1"
                ],
                "the alarm to reach /api/v1/alerts",
                gateway,
            )
            assert alarms[0]["rule"] == Rule.ALARM_PRESSED
            board = client.get("/")
            assert board.status_code == 200
            assert "/static/board.js" in board.text
            assert client.get("/static/board.js").status_code == 200
        with psycopg.connect(database_url) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM events WHERE device_id = 'smoke-alarm-1'"
            ).fetchone()
        assert stored == (1,)
        for service in (broker, gateway, api):
            assert service.is_running(), service.log_tail()


SMOKE_PASSWORD: Final = "smoke-test-password-1"
T = TypeVar("T")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _gateway_subscribed(metrics_port: int) -> bool:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return False
    return "carewatch_broker_connected 1.0" in text


def _wait_for(check: Callable[[], T], what: str, process: ChildProcess) -> T:
    """``check()``'s first truthy answer within 60 s; else fail with the process's log."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        assert process.is_running(), f"{process.name} exited:\n{process.log_tail()}"
        time.sleep(0.2)
    pytest.fail(f"waiting for {what} timed out:\n{process.log_tail()}")
