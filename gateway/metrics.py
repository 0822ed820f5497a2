"""The gateway's Prometheus metrics (names are part of the contract)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import HistogramMetricFamily, Metric

# Batches take milliseconds normally and seconds when the database struggles.
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open files of this process
        PlatformCollector(registry=r)
        self.messages_received = Counter(
            "carewatch_messages_received_total", "MQTT messages taken off the broker", registry=r
        )
        self.events_stored = Counter(
            "carewatch_events_stored_total", "Events newly stored", ["kind"], registry=r
        )
        self.events_duplicate = Counter(
            "carewatch_events_duplicate_total",
            "Events received again and not stored twice",
            registry=r,
        )
        self.dead_letters = Counter(
            "carewatch_dead_letters_total", "Messages kept as dead letters", ["reason"], registry=r
        )
        self.batch_seconds = Histogram(
            "carewatch_ingest_batch_seconds",
            "Time to validate and commit one batch",
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        self.delay_seconds = CountedHistogram(
            "carewatch_ingest_delay_seconds",
            "Time from receipt of a message to the commit that stored it",
            buckets=DELAY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "carewatch_ingest_batch_messages",
            "Messages per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 4000),
            registry=r,
        )
        self.store_errors = Counter(
            "carewatch_store_errors_total",
            "Failed attempts to commit a batch (it is retried, never dropped)",
            ["error"],
            registry=r,
        )
        self.rule_state_conflicts = Counter(
            "carewatch_rule_state_conflicts_total",
            "Transactions evaluated again because another wrote a rule state they started "
            "from meanwhile (gateway.rule_states), by path: ingest or tick",
            ["path"],
            registry=r,
        )
        self.alerts_open = Gauge(
            "carewatch_alerts_open",
            "Alerts on the board (open or acknowledged), by severity",
            ["severity"],
            registry=r,
        )
        self.held_messages = Gauge(
            "carewatch_ingest_held_messages",
            "Messages received and not yet acknowledged (bounded by the Receive Maximum)",
            registry=r,
        )
        self.broker_connected = Gauge(
            "carewatch_broker_connected", "1 while the gateway has an MQTT session", registry=r
        )
        self.devices_online = Gauge(
            "carewatch_devices_online", "Active devices online", ["kind"], registry=r
        )
        # Per site, for the operators' "no events from a site" alert: one series per site
        # with active devices (a few per municipality), read from the database like
        # devices_online, so every gateway tells the same and a restart forgets nothing.
        self.site_last_seen = Gauge(
            "carewatch_site_last_seen_timestamp_seconds",
            "When any active device of the site was last heard from (Unix time)",
            ["site"],
            registry=r,
        )
        # Night supervision (+#11): how long the watchdog's look at every opened planned check
        # takes (issue 11 asks under 1 s p99 for 10,000 residences) and what it decided.
        self.supervision_pass_seconds = Histogram(
            "carewatch_supervision_pass_seconds",
            "Time of one supervision pass over every residence with a plan",
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        self.supervision_alerts = Counter(
            "carewatch_supervision_alerts_total",
            "Supervision alerts opened, resolved or escalated by the watchdog",
            ["change"],
            registry=r,
        )
        self.response_escalations = Counter(
            "carewatch_response_escalations_total",
            "Steps of the alarm response's escalation chain taken by the watchdog",
            ["step"],
            registry=r,
        )
        self._sites_seen: set[str] = set()

    def set_sites_last_seen(self, last_seen: Iterable[tuple[str, datetime]]) -> None:
        """Set the per-site gauge to these (site, last heard from) rows and drop other sites.

        A site whose devices are all decommissioned leaves the gauge: it must not read as a
        site gone silent.
        """
        current = {site: seen.timestamp() for site, seen in last_seen}
        for site in self._sites_seen - current.keys():
            self.site_last_seen.remove(site)
        for site, timestamp in current.items():
            self.site_last_seen.labels(site).set(timestamp)
        self._sites_seen = set(current)


class CountedHistogram:
    """A Prometheus histogram that takes ``observe(value, count)``.

    The ingest delay is one value per network read shared by every message in it; observing
    it once per message cost a lock and a bucket search each, thousands of times per batch.
    Exposed exactly like a prometheus_client Histogram (``_bucket``, ``_sum``, ``_count``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()  # the /metrics server reads from its own thread
        registry.register(self)

    def observe(self, value: float, count: int = 1) -> None:
        """Count ``value`` ``count`` times."""
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += count
            self._sum += value * count

    def collect(self) -> Iterator[Metric]:
        """The histogram as prometheus_client exposes one (the collector protocol)."""
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self._bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )
