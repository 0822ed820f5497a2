"""The gateway's per-site gauge: one series per site heard from, none for a site gone."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.metrics import GatewayMetrics

NAME = "carewatch_site_last_seen_timestamp_seconds"
NOON = datetime(2026, 11, 2, 12, tzinfo=UTC)
ONE = datetime(2026, 11, 2, 13, tzinfo=UTC)


def site_samples(metrics: GatewayMetrics) -> dict[str, float]:
    return {
        sample.labels["site"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == NAME
    }


def test_sites_last_seen_follow_the_rows_and_drop_sites_gone() -> None:
    """Each call sets the sites it is given and removes those it no longer is."""
    metrics = GatewayMetrics()
    metrics.set_sites_last_seen([("gbg-lundby", NOON), ("gbg-majorna", NOON)])
    assert site_samples(metrics) == {
        "gbg-lundby": NOON.timestamp(),
        "gbg-majorna": NOON.timestamp(),
    }
    # Majorna's last device was decommissioned: it must not read as a silent site.
    metrics.set_sites_last_seen([("gbg-lundby", ONE)])
    assert site_samples(metrics) == {"gbg-lundby": ONE.timestamp()}
    metrics.set_sites_last_seen([])
    assert site_samples(metrics) == {}
