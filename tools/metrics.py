"""A running gateway's Prometheus ``/metrics``, read from outside: the demo's live line and the
benchmarks' stored counts."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from carewatch.processes import LOOPBACK


def metrics_url(port: int) -> str:
    """The ``/metrics`` of a process that serves them on ``127.0.0.1:port``."""
    return f"http://{LOOPBACK}:{port}/metrics"


def sample_sums(client: httpx.Client, url: str) -> dict[str, float]:
    """Every sample at ``url`` summed over its labels, by sample name (a counter's ``_total``).

    Raises ``httpx.HTTPError`` when the process does not answer, or not with 200. The caller
    keeps ``client`` for its polls: a new one costs milliseconds that a timing would include.
    """
    response = client.get(url)
    response.raise_for_status()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums
