"""The shipped Caddyfile run by the real Caddy in front of live API processes, over verified TLS.

Certificates come from a private CA made here with trustme (``CAREWATCH_TLS_MODE=files``, as a
municipality with its own CA runs it); nothing needs the internet. Caddy runs with its admin
endpoint off and its HOME and XDG directories in the test's temporary directory: no state of
its own survives the test, and nothing of the machine's is touched.

Clients connect from 127.0.0.3 while Caddy reaches the API from 127.0.0.1 (the API's trusted
proxy), so the address the API records tells which one it believed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import psycopg
import pytest
import trustme

from carewatch.processes import ChildProcess, free_port, wait_until_listening
from carewatch.settings import Settings
from tests.fixtures.api_client import (
    PASSWORD,
    add_device,
    add_org_with_sites,
    add_user,
    insert_alert,
    module_database,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import settings_env
from tools.local.postgres import PostgresInstance

CADDYFILE: Final = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"
CADDY: Final = shutil.which("caddy") or "/usr/bin/caddy"
# Where the test's clients come from: not the proxy's own address (127.0.0.1).
CLIENT_ADDRESS: Final = "127.0.0.3"
# An SSE event must pass the proxy well within this. A buffering proxy would hold it until
# the next heartbeat (a minute away here) or until its buffer fills: never within this bound,
# which is still generous for a loaded machine.
SSE_BOUND_S: Final = 2.0
# One open alert at most per device and rule: a device for each alert the SSE test raises.
DEVICES: Final = ("lock-01", "lock-02", "lock-03")

pytestmark = pytest.mark.skipif(not Path(CADDY).exists(), reason="caddy is not installed")


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server certificate for 127.0.0.1 and localhost, as files."""

    ca: trustme.CA
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts this CA alone (and verifies the name, as browsers do)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode())
        return context


@dataclass(frozen=True)
class Proxy:
    """Caddy in front of the API processes: its HTTPS and HTTP addresses, and its process."""

    https: str
    http: str
    process: ChildProcess


@dataclass(frozen=True)
class World:
    """The database, a caregiver ``anna`` and devices whose alerts she sees."""

    settings: Settings
    database_url: str


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    key_file.chmod(0o600)
    return Certificates(ca, cert_file, key_file)


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "solgarden")
            for device_id in DEVICES:
                add_device(conn, device_id, "solgarden")
            add_user(conn, "anna", "kommun", "caregiver")
        # Heartbeats a minute apart: an event held back by a buffer is not flushed by one.
        yield World(Settings(database_url=url, sse_heartbeat_s=60.0), url)


@contextlib.contextmanager
def running_caddy(
    certificates: Certificates, upstreams: list[str], directory: Path
) -> Iterator[Proxy]:
    """The shipped Caddyfile on free loopback ports, with the private CA's certificate."""
    https_port, http_port = free_port(), free_port()
    home = directory / "caddy-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "CAREWATCH_SITE_ADDRESS": "127.0.0.1",
        "CAREWATCH_TLS_MODE": "files",
        "CAREWATCH_TLS_CERT_FILE": str(certificates.cert_file),
        "CAREWATCH_TLS_KEY_FILE": str(certificates.key_file),
        "CAREWATCH_API_UPSTREAMS": " ".join(upstreams),
        "CAREWATCH_HTTPS_PORT": str(https_port),
        "CAREWATCH_HTTP_PORT": str(http_port),
        "CAREWATCH_PROXY_BIND": "127.0.0.1",
        "CAREWATCH_PROXY_ADMIN": "off",
        "CAREWATCH_PROXY_RETRY_BODIES": "on" if retries_bodies() else "off",
    }
    argv = [CADDY, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    with ChildProcess("caddy", argv, log_path=directory / "caddy.log", env=env) as caddy:
        for port in (https_port, http_port):
            if not wait_until_listening(port, timeout_s=20, still_starting=caddy.is_running):
                raise AssertionError(f"caddy did not start:\n{caddy.log_tail()}")
        yield Proxy(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", caddy)


@contextlib.contextmanager
def api_process(settings: Settings, log_path: Path) -> Iterator[tuple[str, ChildProcess]]:
    """``carewatch api`` as production runs it, in a process of its own (to be killed)."""
    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    with ChildProcess("api", argv, log_path=log_path, env=settings_env(settings)) as process:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if not process.is_running() or time.monotonic() > deadline:
                raise AssertionError(f"the API did not start:\n{process.log_tail()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", process


def client(certificates: Certificates, headers: dict[str, str] | None = None) -> httpx.Client:
    """An HTTPS client from CLIENT_ADDRESS that trusts the private CA."""
    transport = httpx.HTTPTransport(
        verify=certificates.client_context(), local_address=CLIENT_ADDRESS
    )
    return httpx.Client(transport=transport, timeout=10.0, headers=headers)


def bearer(http: httpx.Client, base: str) -> str:
    response = http.post(
        f"{base}/api/v1/auth/token", data={"username": "anna", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def proxy(
    world: World, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """Caddy in front of one API (the tests that kill one have their own pair)."""
    with running_api(world.settings) as base:
        upstream = base.removeprefix("http://")
        with running_caddy(certificates, [upstream], tmp_path_factory.mktemp("proxy")) as proxy:
            yield proxy


def test_verified_https_with_hsts(proxy: Proxy, certificates: Certificates) -> None:
    """HTTPS verifies against the private CA and says Strict-Transport-Security for a year;
    a client that does not trust the CA is refused; plain HTTP only redirects to HTTPS."""
    with client(certificates) as http:
        response = http.get(f"{proxy.https}/readyz")
    assert response.status_code == 200
    hsts = response.headers["strict-transport-security"]
    max_age = int(hsts.split("max-age=")[1].split(";")[0])
    assert max_age >= 365 * 24 * 3600
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{proxy.https}/readyz")  # the system's CAs only
    redirect = httpx.get(f"{proxy.http}/login?lang=en")
    assert redirect.status_code in (301, 308)
    # To the standard HTTPS port: Caddy takes its https_port for the one behind a port mapping.
    assert redirect.headers["location"] == "https://127.0.0.1/login?lang=en"


def test_login_cookie_is_secure_behind_the_proxy(proxy: Proxy, certificates: Certificates) -> None:
    """The login page sets the session cookie Secure (and HttpOnly, SameSite=Strict) over the
    proxy's HTTPS: the API believed the proxy's X-Forwarded-Proto."""
    with client(certificates) as http:
        response = http.post(
            f"{proxy.https}/login",
            data={"username": "anna", "password": PASSWORD},
            headers={"Origin": proxy.https},
        )
    assert response.status_code == 303, response.text
    attributes = {a.strip().lower() for a in response.headers["set-cookie"].split(";")}
    assert {"secure", "httponly", "samesite=strict"} <= attributes


def test_client_sent_forwarded_headers_are_not_believed(
    proxy: Proxy, certificates: Certificates, world: World
) -> None:
    """X-Forwarded-For sent by a client is replaced by the proxy: the API's throttle and audit
    log see the address the client really connected from."""
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"}
    with client(certificates, headers=forged) as http:
        failed = http.post(
            f"{proxy.https}/api/v1/auth/token",
            data={"username": "nobody-proxy", "password": "guess"},
        )
        assert failed.status_code == 401
        bearer(http, proxy.https)
    with psycopg.connect(world.database_url) as conn:
        failures = conn.execute(
            "SELECT client FROM login_failures WHERE username = 'nobody-proxy'"
        ).fetchall()
        latest_login = conn.execute(
            "SELECT client FROM audit_log WHERE action = 'login' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert failures == [(CLIENT_ADDRESS,)]
    assert latest_login == (CLIENT_ADDRESS,)


class StreamReader:
    """Lines of an SSE response read in a thread, each with the time it arrived."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._response = response
        self._thread = threading.Thread(target=self._read, name="sse-lines", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            for line in self._response.iter_lines():
                self.lines.put((time.monotonic(), line))

    def next_matching(self, prefix: str, timeout_s: float) -> tuple[float, str]:
        """The next line that starts with ``prefix`` and when it arrived."""
        deadline = time.monotonic() + timeout_s
        while True:
            arrived, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line.startswith(prefix):
                return arrived, line


def test_sse_events_pass_the_proxy_without_delay(
    proxy: Proxy, certificates: Certificates, world: World
) -> None:
    """An alert raised reaches an SSE client through the proxy at once: the response streams
    (no length, not compressed, not cached) and each event is flushed as it is written."""
    with client(certificates) as http:
        token = bearer(http, proxy.https)
        with http.stream(
            "GET",
            f"{proxy.https}/api/v1/alerts/stream",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            timeout=httpx.Timeout(10.0, read=None),
        ) as response:
            assert response.status_code == 200
            headers = response.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert "content-length" not in headers
            assert "content-encoding" not in headers
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            reader = StreamReader(response)
            reader.next_matching("retry:", timeout_s=10)  # the stream is open end to end
            latencies: list[float] = []
            for device_id in DEVICES:
                raised_at = time.monotonic()
                alert = insert_alert(world.database_url, device_id)
                arrived, line = reader.next_matching("data:", timeout_s=30)
                assert json.loads(line.removeprefix("data:"))["id"] == alert.alert_id
                latencies.append(arrived - raised_at)
            # Closing the stream ends the reader (the response closes with the block).
    assert max(latencies) < SSE_BOUND_S, latencies


def test_a_killed_api_process_costs_no_failed_request(
    world: World, certificates: Certificates, tmp_path: Path
) -> None:
    """With two API processes behind the proxy, both serve; SIGKILL one and requests still
    succeed: retried on the other at once, and skipped once the health check noticed."""
    with (
        running_api(world.settings) as base,
        api_process(world.settings, tmp_path / "api.log") as (upstream, doomed),
        running_caddy(certificates, [base.removeprefix("http://"), upstream], tmp_path) as proxy,
        client(certificates) as http,
    ):
        for n in range(30):
            assert http.get(f"{proxy.https}/healthz?before={n}").status_code == 200
        # The process's access log: some of the requests went to it.
        assert "/healthz?before=" in doomed.log_tail(200)
        auth = {"Authorization": f"Bearer {bearer(http, proxy.https)}"}
        doomed.kill()
        reads = [http.get(f"{proxy.https}/api/v1/sites", headers=auth) for _ in range(20)]
        if not retries_bodies():
            # Caddy 2.6 cannot resend a body: POSTs are whole again once the health check
            # took the dead process out (within a second or so).
            wait_for_log(proxy.process, f'"host":"{upstream}"', timeout_s=15)
        form = {"username": "anna", "password": PASSWORD}
        logins = [http.post(f"{proxy.https}/api/v1/auth/token", data=form) for _ in range(10)]
        caddy_log = proxy.process.log_tail(40)
    statuses = [response.status_code for response in reads + logins]
    assert statuses == [200] * 30, caddy_log


def retries_bodies() -> bool:
    """Whether this Caddy can resend a request's body to another upstream (2.7 and later)."""
    shown = subprocess.run(
        [CADDY, "version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    major, minor = (int(part) for part in shown.removeprefix("v").split(".")[:2])
    return (major, minor) >= (2, 7)


def wait_for_log(process: ChildProcess, needle: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in process.log_tail(200):
        assert time.monotonic() < deadline, f"no {needle!r} in the log:\n{process.log_tail()}"
        time.sleep(0.1)


def test_public_name_mode_gets_certificates_from_acme(tmp_path: Path) -> None:
    """The other documented mode parses: for a public name Caddy manages the certificate itself
    (ACME, with the contact address), redirects HTTP, and proxies to the API upstreams."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CAREWATCH_SITE_ADDRESS": "carewatch.kommun.example",
        "CAREWATCH_ACME_EMAIL": "it@kommun.example",
        "CAREWATCH_API_UPSTREAMS": "api-1:8000 api-2:8000",
        "CAREWATCH_PROXY_RETRY_BODIES": "on" if retries_bodies() else "off",
    }
    adapted = subprocess.run(
        [CADDY, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, env=env, check=True, timeout=30,
    )  # fmt: skip
    config = json.loads(adapted.stdout)
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == ["carewatch.kommun.example"]
    assert {issuer["module"] for issuer in policy["issuers"]} >= {"acme"}
    assert {issuer.get("email") for issuer in policy["issuers"]} == {"it@kommun.example"}
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    assert "certificates" not in config["apps"]["tls"]  # no files in this mode
    routes = json.dumps(server["routes"])
    assert '"dial": "api-1:8000"' in routes
    assert '"dial": "api-2:8000"' in routes
    assert '"uri": "/readyz"' in routes


def test_metrics_stay_on_the_private_network(proxy: Proxy, certificates: Certificates) -> None:
    """Through the proxy /metrics is not found; the API itself still serves it to Prometheus."""
    with client(certificates) as http:
        assert http.get(f"{proxy.https}/metrics").status_code == 404
        assert http.get(f"{proxy.https}/healthz").status_code == 200
