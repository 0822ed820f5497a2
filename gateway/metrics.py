"""The gateway's Prometheus metrics (names are part of the contract)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# Batches take milliseconds normally and seconds when the database struggles.
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class GatewayMetrics:
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
        self.delay_seconds = Histogram(
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
