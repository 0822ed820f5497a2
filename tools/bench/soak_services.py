"""The soak's installation: one broker, two gateways, two API processes behind Caddy, PostgreSQL.

Every part runs as production runs it (``python -m gateway``, ``python -m api``, Mosquitto from
the shipped configuration with its authentication and ACL, Caddy as the reverse proxy) and can
be broken and brought back by ``soak_faults``: a :class:`Slot` holds whichever process of a
role runs now and starts the next one, so a killed gateway comes back under the same client id
and metrics port, a killed API on the same port behind the proxy.

Two seams decide how clients reach the services:

- :func:`broker_tls`: the broker's TLS listener and the CA that clients verify it with
  (``tools.local.certificates``); every MQTT client of the run (gateways, publishers, presses,
  probes) connects with ``mqtts://`` and certificate verification;
- :func:`start_proxy`: Caddy in front of the API processes from the shipped
  ``deploy/caddy/Caddyfile``, told by its environment variables what a deployment tells it
  (HTTPS with a certificate of the run's private CA, the API processes as upstreams), as
  ``tests/integration/test_https_proxy.py`` runs it; the HTTP clients of the run (login, SSE
  streams) verify it against the same CA (:func:`client_ca`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import httpx

from broker.mosquitto import MosquittoInstance, TlsListener
from carewatch.processes import LOOPBACK, free_port, wait_until_listening
from tools.bench.children import BenchChild
from tools.bench.endpoints import CA_FILE_VARIABLE
from tools.bench.errors import BenchError
from tools.bench.harness import api_url, gateway_env, start_api, start_gateway, wait_ready
from tools.bench.harness import wait_connected as wait_gateway_connected
from tools.local.certificates import TlsFiles, local_tls
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.metrics import metrics_url

log = logging.getLogger("tools.bench.soak")

GATEWAYS: Final = 2
APIS: Final = 2
_PROXY_START_S: Final = 10.0
# The proxy configuration production runs (a checkout's; tools are not in the wheel).
_SSL_CERT_FILE: Final = "SSL_CERT_FILE"
CADDYFILE: Final = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"
# Caddy 2.7 added request_buffers, which the Caddyfile needs to retry requests with a body.
_RETRY_BODIES_SINCE: Final = (2, 7)


class Slot:
    """One role of the installation (``gateway-0``, ``api-1``): the process that fills it now,
    how to start the next one, and where it answers when it is ready."""

    def __init__(self, name: str, start: Callable[[Path], BenchChild], ready_url: str) -> None:
        self.name = name
        self.ready_url = ready_url
        self._start = start
        self._logs = 0
        self.child = self._start_next()

    def _start_next(self) -> BenchChild:
        self._logs += 1
        return self._start(Path(f"{self.name}.{self._logs}.log"))

    @property
    def pid(self) -> int | None:
        """The pid of the process that fills the slot, while it runs."""
        return self.child.pid if self.child.is_running() else None

    def wait_ready(self) -> None:
        """Until it answers 200 at its ready URL."""
        wait_ready(self.ready_url, self.child)

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        self.child.kill()

    def restart(self) -> None:
        """Start the next process of the role (after a kill) and wait until it is ready."""
        self.child.stop()
        self.child = self._start_next()
        self.wait_ready()

    def stop(self) -> None:
        """SIGTERM (and SIGKILL after the grace); the end of the run."""
        self.child.stop()


class SoakServices:
    """The running installation, stopped when the ``stack`` it was given closes."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        base_dir: Path,
        postgres: PostgresInstance,
        database_url: str,
        *,
        share_group: str,
    ) -> None:
        self.base_dir = base_dir
        self.postgres = postgres
        self.database_url = database_url
        self.logs = base_dir / "logs"
        self.logs.mkdir(exist_ok=True)
        identities = LocalIdentities()
        tls_files = local_tls(base_dir / "tls")
        tls = broker_tls(tls_files)
        self.ca_file = str(tls_files.ca_file)
        self.broker = stack.enter_context(
            MosquittoInstance(base_dir / "mosquitto", auth=identities.auth(), tls=tls)
        )
        self.tls = tls is not None
        gateway_user = identities.gateway_url(self.broker)
        self.simulator_url = identities.simulator_url(self.broker)
        if tls is not None:
            gateway_user = _as_tls(self.broker, gateway_user)
            self.simulator_url = _as_tls(self.broker, self.simulator_url)
        self.client_env: dict[str, str] = {CA_FILE_VARIABLE: self.ca_file} if self.ca_file else {}
        self.gateways = [
            self._gateway_slot(number, gateway_user, share_group) for number in range(GATEWAYS)
        ]
        stack.callback(self._stop_slots, self.gateways)
        self.apis = [self._api_slot(number) for number in range(APIS)]
        stack.callback(self._stop_slots, self.apis)
        for slot in (*self.gateways, *self.apis):
            slot.wait_ready()
        for gateway in self.gateways:
            wait_connected(gateway)
        self.proxy, self.proxy_url = start_proxy(
            base_dir / "caddy",
            [api_port(slot) for slot in self.apis],
            tls_files,
            self.logs / "caddy.log",
        )
        stack.callback(self.proxy.stop)

    def _gateway_slot(self, number: int, mqtt_url: str, share_group: str) -> Slot:
        port = free_port()
        env = {
            **gateway_env(self.database_url, mqtt_url, port),
            **self.client_env,
            "CAREWATCH_GATEWAY_CLIENT_ID": f"bench-soak-gateway-{number}",
            "CAREWATCH_GATEWAY_SHARE_GROUP": share_group,
        }
        return Slot(
            f"gateway-{number}",
            lambda log_name: start_gateway(env, self.logs / log_name),
            metrics_url(port),
        )

    def _api_slot(self, number: int) -> Slot:
        port = free_port()
        # The API does not connect to the broker; it only tells onboarded devices where it is.
        env = {
            **gateway_env(self.database_url, self.broker.url(), free_port()),
            **self.client_env,
        }
        return Slot(
            f"api-{number}",
            lambda log_name: start_api(port, env, self.logs / log_name),
            f"{api_url(port)}/readyz",
        )

    @staticmethod
    def _stop_slots(slots: list[Slot]) -> None:
        for slot in slots:
            slot.stop()

    def postmaster_pid(self) -> int | None:
        """PostgreSQL's postmaster, from its pid file (None while it is down)."""
        try:
            first = (self.postgres.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.strip().isdigit() else None

    def pids(self) -> dict[str, int | None]:
        """Every long-running process of the installation by role (None while one is down)."""
        pids: dict[str, int | None] = {slot.name: slot.pid for slot in (*self.gateways, *self.apis)}
        pids["broker"] = self.broker.pid
        pids["postgres"] = self.postmaster_pid()
        pids["proxy"] = self.proxy.pid if self.proxy.is_running() else None
        return pids


def api_port(slot: Slot) -> int:
    """The port of an API slot, from its ready URL."""
    port = httpx.URL(slot.ready_url).port
    if port is None:
        raise ValueError(f"no port in {slot.ready_url}")
    return port


def wait_connected(gateway: Slot, timeout_s: float = 60.0) -> None:
    """Until the gateway says it has a broker session (``carewatch_broker_connected`` 1)."""
    wait_gateway_connected(gateway.ready_url, gateway.child, timeout_s)


# --- the seams --------------------------------------------------------------------------------


def broker_tls(files: TlsFiles) -> TlsListener:
    """The broker's TLS listener, with a certificate of the run's private CA (``files``).

    Every MQTT client of the soak goes through it, as devices and remote gateways do in
    production (the plaintext listener stays, on loopback, for nothing of ours).
    """
    return TlsListener(
        port=free_port(), certfile=files.certfile, keyfile=files.keyfile, cafile=files.ca_file
    )


def _as_tls(broker: MosquittoInstance, plain_url: str) -> str:
    """The same credentials on the broker's TLS listener."""
    endpoint = httpx.URL(plain_url.replace("mqtt://", "http://", 1))
    return broker.tls_url(endpoint.username, endpoint.password)


def caddy_binary() -> str:
    """The ``caddy`` program (Debian's package ``caddy``)."""
    found = shutil.which("caddy")
    if found is None:
        raise BenchError("caddy not found on PATH (apt-get install caddy)")
    return found


def caddy_version() -> str:
    """Caddy's version, as ``caddy version`` prints it."""
    result = subprocess.run(
        [caddy_binary(), "version"], capture_output=True, text=True, timeout=10, check=False
    )
    return (result.stdout.split() or ["unknown"])[0]


def retries_bodies(version: str) -> bool:
    """Whether Caddy ``version`` (``v2.6.2``) can resend a request's body to another upstream."""
    try:
        major, minor = (int(part) for part in version.removeprefix("v").split(".")[:2])
    except ValueError:
        return True  # not a version we can read: a recent build, most likely
    return (major, minor) >= _RETRY_BODIES_SINCE


def proxy_env(
    directory: Path, upstream_ports: list[int], tls: TlsFiles, https_port: int, http_port: int
) -> dict[str, str]:
    """What the shipped Caddyfile is told here, in the variables a deployment sets.

    HTTPS on loopback with the certificate of the run's CA (``CAREWATCH_TLS_MODE=files``; it
    names 127.0.0.1), the redirect on another free port, no admin endpoint (its fixed port
    :2019 would clash with other Caddy instances on the machine; nothing of the run needs it),
    Caddy's state (``$HOME/.local/share``, ``$XDG_*``) in the run's directory, and request
    bodies retried only where Caddy can (2.7 and later).
    """
    return {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "CAREWATCH_SITE_ADDRESS": LOOPBACK,
        "CAREWATCH_TLS_MODE": "files",
        "CAREWATCH_TLS_CERT_FILE": str(tls.certfile),
        "CAREWATCH_TLS_KEY_FILE": str(tls.keyfile),
        "CAREWATCH_API_UPSTREAMS": " ".join(f"{LOOPBACK}:{port}" for port in upstream_ports),
        "CAREWATCH_HTTPS_PORT": str(https_port),
        "CAREWATCH_HTTP_PORT": str(http_port),
        "CAREWATCH_PROXY_BIND": LOOPBACK,
        "CAREWATCH_PROXY_ADMIN": "off",
        "CAREWATCH_PROXY_RETRY_BODIES": "on" if retries_bodies(caddy_version()) else "off",
    }


def start_proxy(
    directory: Path, upstream_ports: list[int], tls: TlsFiles, log_path: Path
) -> tuple[BenchChild, str]:
    """Caddy from the shipped Caddyfile in front of ``upstream_ports``, serving HTTPS on a free
    loopback port: (it, its URL)."""
    if not CADDYFILE.is_file():
        raise BenchError(f"{CADDYFILE} not found (the soak runs from a checkout)")
    directory.mkdir(parents=True, exist_ok=True)
    https_port, http_port = free_port(), free_port()
    env = proxy_env(directory, upstream_ports, tls, https_port, http_port)
    argv = [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    child = BenchChild("caddy", argv, log_path=log_path, env=env, stdout="log", stdin_pipe=False)
    try:
        for port in (https_port, http_port):
            if not wait_until_listening(
                port, timeout_s=_PROXY_START_S, still_starting=child.is_running
            ):
                raise child.failed(f"did not listen on {port} within {_PROXY_START_S:.0f} s")
    except BaseException:
        child.stop()
        raise
    return child, f"https://{LOOPBACK}:{https_port}"


@contextlib.contextmanager
def client_ca(services: SoakServices) -> Iterator[None]:
    """The run's CA in this process's environment while it runs: the bench's own MQTT clients
    (``publishers.Qos1Connection``: presses and probes) read it from there, as children do,
    and its HTTPS clients (httpx: login, SSE streams) from ``SSL_CERT_FILE``."""
    variables = (CA_FILE_VARIABLE, _SSL_CERT_FILE)
    previous = {name: os.environ.get(name) for name in variables}
    if services.ca_file:
        for name in variables:
            os.environ[name] = services.ca_file
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
