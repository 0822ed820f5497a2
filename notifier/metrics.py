"""The notifier's Prometheus metrics (names are part of the contract, docs/contract.md)."""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# From the event to the receiver's 2xx: well under a second normally, up to an hour when a
# receiver was down and the retries brought it through.
DELIVERY_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
RESULTS: Final = ("delivered", "retry", "dead")


class NotifierMetrics:
    """The notifier's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.deliveries = Counter(
            "carewatch_webhook_deliveries_total",
            "Delivery attempts by result: delivered, retry (failed, tried again later), dead"
            " (failed for the last time)",
            ["result"],
            registry=r,
        )
        for result in RESULTS:
            self.deliveries.labels(result)
        self.enqueued = Counter(
            "carewatch_webhook_enqueued_total",
            "Deliveries created, by event",
            ["event"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "carewatch_webhook_delivery_seconds",
            "From a delivery's creation to the receiver's 2xx",
            buckets=DELIVERY_BUCKETS_S,
            registry=r,
        )
        self.queue_depth = Gauge(
            "carewatch_webhook_queue_depth", "Deliveries waiting to be delivered", registry=r
        )
        self.oldest_pending = Gauge(
            "carewatch_webhook_oldest_pending_seconds",
            "Age of the oldest delivery still waiting (0 when none waits)",
            registry=r,
        )
        self.dead = Gauge(
            "carewatch_webhook_dead_deliveries",
            "Deliveries given up after their last attempt, in the delivery log",
            registry=r,
        )
        self.database_connected = Gauge(
            "carewatch_notifier_database_connected",
            "1 while the notifier listens for new alert changes and escalations",
            registry=r,
        )
