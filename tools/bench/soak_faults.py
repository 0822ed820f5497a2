"""The soak's faults: what breaks, when, and when it counts as healed.

One fault every ``--fault-every`` seconds, the kinds in turn (:data:`FAULT_KINDS`), so a run
of five kinds' worth of intervals sees each once:

``gateway_kill``
    SIGKILL of gateway 0, started again after a second (as a supervisor would) under the same
    client id; its unacknowledged messages wait in its broker session meanwhile.
``postgres_restart``
    ``pg_ctl stop -m fast`` and start of the private cluster: every connection is cut.
``broker_restart``
    SIGTERM of Mosquitto (it writes its persistence file) and a start on the same ports.
``api_kill``
    SIGKILL of API process 0; its SSE clients reconnect through the proxy with
    ``Last-Event-ID``; it is started again on the same port.
``read_only``
    PostgreSQL refuses every write for a while (``default_transaction_read_only``, reloaded):
    what a full disk does to the gateway, which holds its batches unacknowledged and retries.
    A real full disk is not made: it needs a mount (root), and PostgreSQL stops (PANIC) when it
    cannot write WAL, which the restart fault already covers.

A window starts at the injection. It is *recovered* when the broken part answers again (the
gateway has a broker session, the database accepts connections and both APIs are ready, the
broker listens and both gateways are connected, the API is ready) and *ends* when a probe
alarm published after that has reached every SSE client: the system as a whole works again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import psycopg

from devices.simulator import events_topic
from tools.bench import workload
from tools.bench.alerts import AlertStream
from tools.bench.publishers import Qos1Connection
from tools.bench.soak_services import SoakServices, wait_connected
from tools.bench.soak_stats import FaultWindow

log = logging.getLogger("tools.bench.soak")

FAULT_KINDS: Final = ("gateway_kill", "postgres_restart", "broker_restart", "api_kill", "read_only")
_RESTART_DELAY_S: Final = 1.0
# The read-only episode lasts this long, or half the interval between faults if that is less.
READ_ONLY_S: Final = 10.0
_PROBE_TIMEOUT_S: Final = 120.0
_PROBE_RETRY_S: Final = 0.2
_ALARM_RULE: Final = "alarm_pressed"


def schedule(duration_s: float, every_s: float) -> list[tuple[float, str]]:
    """(seconds after the start, kind) of every fault: one each ``every_s``, the kinds in turn,
    none in the last half interval (it could not heal before the end)."""
    faults: list[tuple[float, str]] = []
    at_s = every_s
    while at_s <= duration_s - every_s / 2:
        faults.append((at_s, FAULT_KINDS[len(faults) % len(FAULT_KINDS)]))
        at_s += every_s
    return faults


class FaultInjector:
    """Breaks the installation and waits until it has healed; the windows it recorded."""

    def __init__(
        self,
        services: SoakServices,
        streams: Sequence[AlertStream],
        next_alarm: Callable[[], str],
        read_only_s: float,
    ) -> None:
        self.services = services
        self.streams = streams
        self.next_alarm = next_alarm
        self.read_only_s = read_only_s
        self.windows: list[FaultWindow] = []
        self.probes: set[str] = set()

    def inject(self, kind: str) -> FaultWindow:
        """Inject one fault of ``kind``, wait until it has healed; its window."""
        started_at = time.time()
        target, note = getattr(self, f"_{kind}")()
        recovered_at = time.time()
        ended_at, probe_note = self.probe(recovered_at)
        window = FaultWindow(
            kind,
            target,
            started_at,
            recovered_at,
            ended_at,
            "; ".join(filter(None, [note, probe_note])),
        )
        self.windows.append(window)
        log.info(
            "%s (%s): recovered after %.1f s, alarms through after %.1f s",
            kind,
            target,
            recovered_at - started_at,
            ended_at - started_at,
        )
        return window

    # --- the faults ----------------------------------------------------------------------------

    def _gateway_kill(self) -> tuple[str, str]:
        gateway = self.services.gateways[0]
        gateway.kill()
        time.sleep(_RESTART_DELAY_S)
        gateway.restart()
        wait_connected(gateway)
        return gateway.name, ""

    def _postgres_restart(self) -> tuple[str, str]:
        self.services.postgres.stop("fast")
        self.services.postgres.start()
        for api in self.services.apis:
            api.wait_ready()
        return "postgres", "pg_ctl stop -m fast, start"

    def _broker_restart(self) -> tuple[str, str]:
        self.services.broker.restart()
        for gateway in self.services.gateways:
            wait_connected(gateway)
        return "broker", "SIGTERM (persistence written), start on the same ports"

    def _api_kill(self) -> tuple[str, str]:
        api = self.services.apis[0]
        api.kill()
        time.sleep(_RESTART_DELAY_S)
        api.restart()
        return api.name, ""

    def _read_only(self) -> tuple[str, str]:
        _set_read_only(self.services.postgres.url(), on=True)
        try:
            time.sleep(self.read_only_s)
        finally:
            _set_read_only(self.services.postgres.url(), on=False)
        return "postgres", f"default_transaction_read_only for {self.read_only_s:.0f} s"

    # --- healed? -------------------------------------------------------------------------------

    def probe(self, after: float) -> tuple[float, str]:
        """Press a fresh alarm button until the broker routes it, then wait until every SSE
        client has its alert: when that was, not before ``after`` (or the timeout, and a note
        saying so)."""
        device = self.next_alarm()
        self.probes.add(device)
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        number = 0
        routed = False
        while not routed and time.monotonic() < deadline:
            number += 1
            try:
                with Qos1Connection(
                    self.services.simulator_url, client_id="bench-soak-probe"
                ) as mqtt:
                    routed = mqtt.publish(
                        events_topic(device),
                        workload.live_envelope(f"probe-{number}", "alarm.pressed"),
                    )[1]
            except (OSError, ConnectionError) as error:
                log.info("probe not published yet (%r)", error)
            if not routed:
                time.sleep(_PROBE_RETRY_S)
        key = (device, _ALARM_RULE, 1)
        for stream in self.streams:
            if not stream.wait_for([key], max(deadline - time.monotonic(), 0.0)):
                return (
                    time.time(),
                    f"probe alarm not on every stream after {_PROBE_TIMEOUT_S:.0f} s",
                )
        arrived = max(stream.snapshot()[key] for stream in self.streams)
        return max(arrived, after), ""


def _set_read_only(server_url: str, *, on: bool) -> None:
    """Make PostgreSQL refuse (or accept again) writes in every session, without a restart."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        if on:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")
