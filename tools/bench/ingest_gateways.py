"""The gateways of one ``carewatch bench ingest`` measurement: one, or several on one shared
subscription, as production scales out.

Each is ``python -m gateway`` with its own client id and metrics port; with more than one they
join the same share group (``$share/<group>/...``, gateway/service.py), so the broker splits
the messages between them. Each one's part of the events is read from its own
``carewatch_events_stored_total`` (summed over the kinds), before the clock starts and after
the last row is stored: the difference is what that process stored in the measurement.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from carewatch.processes import free_port
from carewatch.settings import Settings
from tools.bench.children import BenchChild
from tools.bench.errors import ChildError
from tools.bench.harness import gateway_env, start_gateway, wait_connected, wait_ready
from tools.metrics import metrics_url, sample_sums

log = logging.getLogger("tools.bench.ingest")

_STORED_METRIC: Final = "carewatch_events_stored_total"
# The counter goes up just after the commit that made the rows visible: a moment's wait.
_COUNTERS_SETTLE_S: Final = 5.0
_POLL_S: Final = 0.05
# The gateway drains for up to Settings.drain_timeout_s (30 s) on SIGTERM.
_GATEWAY_STOP_S: Final = 40.0
_SHARE_GROUP_VARIABLE: Final = "CAREWATCH_GATEWAY_SHARE_GROUP"


class Gateways:
    """``count`` gateways on ``database_url`` and ``mqtt_url``, started at once; ``with``
    stops them. Logs go to ``log_dir/gateway-<tag>-<n>.log``."""

    def __init__(
        self, count: int, *, database_url: str, mqtt_url: str, log_dir: Path, tag: str
    ) -> None:
        self.children: list[BenchChild] = []
        self.urls: list[str] = []
        self.log_paths: list[Path] = []
        self._http = httpx.Client(timeout=2.0)
        try:
            for number in range(count):
                port = free_port()
                env = gateway_env(database_url, mqtt_url, port)
                if count > 1:
                    env["CAREWATCH_GATEWAY_CLIENT_ID"] = f"bench-gateway-{number}"
                    # One group whatever the environment says: a plain subscription ("") would
                    # hand every message to each of them.
                    env[_SHARE_GROUP_VARIABLE] = os.environ.get(_SHARE_GROUP_VARIABLE) or str(
                        Settings.model_fields["gateway_share_group"].default
                    )
                log_path = log_dir / f"gateway-{tag}-{number}.log"
                self.children.append(start_gateway(env, log_path))
                self.urls.append(metrics_url(port))
                self.log_paths.append(log_path)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Gateways:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_subscribed(self) -> None:
        """Until every gateway serves its metrics and has its subscriptions granted: with a
        shared subscription, a probe routed to one says nothing of the others."""
        for child, url in zip(self.children, self.urls, strict=True):
            wait_ready(url, child)
            wait_connected(url, child)

    def failed(self, problem: str) -> ChildError:
        """The error that says the gateways failed, with the first one's log."""
        return self.children[0].failed(problem)

    def check_alive(self, when: str = "") -> None:
        """Raise if any gateway has exited."""
        for child in self.children:
            child.check_alive(when)

    def stored(self) -> list[int]:
        """Each gateway's ``carewatch_events_stored_total`` now."""
        return [int(sample_sums(self._http, url).get(_STORED_METRIC, 0.0)) for url in self.urls]

    def stored_since(self, before: Sequence[int], total: int) -> tuple[int, ...]:
        """What each gateway stored since ``before``, once together they account for ``total``
        (or after a short wait, as they are)."""
        deadline = time.monotonic() + _COUNTERS_SETTLE_S
        while True:
            now = self.stored()
            since = tuple(after - earlier for after, earlier in zip(now, before, strict=True))
            if sum(since) >= total or time.monotonic() > deadline:
                return since
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """SIGTERM each (it drains) and say so when one did not exit cleanly."""
        for child, log_path in zip(self.children, self.log_paths, strict=True):
            code = child.stop(_GATEWAY_STOP_S)
            if code != 0:
                log.warning("gateway exited with %s after SIGTERM (see %s)", code, log_path)

    def close(self) -> None:
        """Stop whatever still runs and the metrics client."""
        for child in self.children:
            child.stop()
        self._http.close()
