"""``carewatch bench dashboards`` runs end to end (small), and its figures add up."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_dashboards_small_run_agrees_with_raw_events() -> None:
    """A small backfill: both views answered, timed, and equal to the raw-events computation."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "dashboards",
         "--days", "21", "--devices", "40", "--requests", "3", "--raw-runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 40
    assert 20 <= result["days"] <= 22
    assert result["events"] > 0
    assert result["backfill_s"] > 0
    views = result["views"]
    assert set(views) == {"month_by_day", "year_by_week"}
    assert views["month_by_day"]["buckets"] == 30
    assert views["year_by_week"]["buckets"] in (52, 53)
    for view in views.values():
        assert view["api_requests"] == 2
        assert 0 < view["api_p50_ms"] <= view["api_p95_ms"] <= view["api_max_ms"]
        assert view["raw_ms"] > 0
        # Three weeks of 40 devices: the robots play and the locks open every day.
        assert view["visits"] > 0
        assert view["robot_minutes"] > 0
    # Both views cover the whole history: the same totals.
    month, year = views["month_by_day"], views["year_by_week"]
    assert (month["checks"], month["visits"], month["alarms"]) == (
        year["checks"],
        year["visits"],
        year["alarms"],
    )
    assert "speedup" in done.stdout
