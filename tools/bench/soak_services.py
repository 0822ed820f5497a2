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
- :func:`start_proxy`: Caddy in front of the API processes, from the configuration that
  :func:`proxy_config` writes (round robin, retries on a dead upstream, health checks on
  ``/readyz``, SSE flushed at once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import httpx

from broker.mosquitto import MosquittoInstance, TlsListener
from carewatch.processes import LOOPBACK, free_port, wait_until_listening
from tools.bench.children import BenchChild
from tools.bench.endpoints import CA_FILE_VARIABLE
from tools.bench.errors import BenchError
from tools.bench.harness import api_url, gateway_env, start_api, start_gateway, wait_ready
from tools.local.certificates import local_tls
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.metrics import metrics_url, sample_sums

log = logging.getLogger("tools.bench.soak")

GATEWAYS: Final = 2
APIS: Final = 2
_CONNECTED_METRIC: Final = "carewatch_broker_connected"
_POLL_S: Final = 0.1
_PROXY_START_S: Final = 10.0


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
        tls, self.ca_file = broker_tls(base_dir / "tls")
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
            base_dir / "caddy", [api_port(slot) for slot in self.apis], self.logs / "caddy.log"
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
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if sample_sums(client, gateway.ready_url).get(_CONNECTED_METRIC) == 1.0:
                    return
            gateway.child.check_alive()
            time.sleep(_POLL_S)
    raise gateway.child.failed(f"had no broker session within {timeout_s:.0f} s")


# --- the seams --------------------------------------------------------------------------------


def broker_tls(directory: Path) -> tuple[TlsListener | None, str]:
    """The broker's TLS listener and the CA file clients trust: a private CA made for this run.

    Every MQTT client of the soak goes through it, as devices and remote gateways do in
    production (the plaintext listener stays, on loopback, for nothing of ours).
    """
    files = local_tls(directory)
    listener = TlsListener(
        port=free_port(), certfile=files.certfile, keyfile=files.keyfile, cafile=files.ca_file
    )
    return listener, str(files.ca_file)


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


def proxy_config(listen_port: int, upstream_ports: list[int]) -> str:
    """A Caddyfile: plain HTTP on loopback in front of the API processes.

    Round robin; a request to an upstream that does not answer is tried on the other for up to
    5 s (``lb_try_duration``), a failed upstream is left out for 5 s (``fail_duration``) and
    checked every second on ``/readyz``; ``flush_interval -1`` sends every SSE event at once.
    On SIGTERM it waits at most 2 s for open connections (SSE streams never end by themselves).
    No admin endpoint (nothing of the run needs it, and its fixed port :2019 would clash with
    other Caddy instances on the machine), no automatic HTTPS (the run's TLS is MQTT's).
    """
    upstreams = " ".join(f"{LOOPBACK}:{port}" for port in upstream_ports)
    return f"""{{
	admin off
	auto_https off
	grace_period 2s
}}

http://{LOOPBACK}:{listen_port} {{
	reverse_proxy {upstreams} {{
		lb_policy round_robin
		lb_try_duration 5s
		lb_try_interval 100ms
		fail_duration 5s
		health_uri /readyz
		health_interval 1s
		health_timeout 2s
		flush_interval -1
	}}
}}
"""


def start_proxy(
    directory: Path, upstream_ports: list[int], log_path: Path
) -> tuple[BenchChild, str]:
    """Caddy in front of ``upstream_ports``, listening on a free loopback port: (it, its URL)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "Caddyfile"
    config.write_text(proxy_config(port, upstream_ports), encoding="utf-8")
    # Caddy keeps state under $HOME/.local/share and $XDG_CONFIG_HOME: the run's directory.
    env = _caddy_env(directory)
    argv = [caddy_binary(), "run", "--config", str(config), "--adapter", "caddyfile"]
    child = BenchChild("caddy", argv, log_path=log_path, env=env, stdout="log", stdin_pipe=False)
    try:
        if not wait_until_listening(
            port, timeout_s=_PROXY_START_S, still_starting=child.is_running
        ):
            raise child.failed(f"did not listen on {port} within {_PROXY_START_S:.0f} s")
    except BaseException:
        child.stop()
        raise
    return child, f"http://{LOOPBACK}:{port}"


def _caddy_env(directory: Path) -> Mapping[str, str]:
    return {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
    }


@contextlib.contextmanager
def client_ca(services: SoakServices) -> Iterator[None]:
    """The run's CA in this process's environment while it runs: the bench's own MQTT clients
    (``publishers.Qos1Connection``: presses and probes) read it from there, as children do."""
    previous = os.environ.get(CA_FILE_VARIABLE)
    if services.ca_file:
        os.environ[CA_FILE_VARIABLE] = services.ca_file
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CA_FILE_VARIABLE, None)
        else:
            os.environ[CA_FILE_VARIABLE] = previous
