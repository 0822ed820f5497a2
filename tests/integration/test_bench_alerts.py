"""``carewatch bench alerts``: a small run end to end (a smoke test, not a timed one)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import orjson
import pytest

from app.cli import main
from tools.bench import alerts
from tools.local.webhook_receiver import Received

AGREED_KEYS = {"alerts", "background_eps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "lost"}
# Issue 12: the same for the webhook and the push, after the board's.
CHANNEL_KEYS = {
    f"{channel}_{name}"
    for channel in ("webhook", "push")
    for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "lost", "measured", "arrived", "refused")
}


def test_plan_spreads_new_alerts_and_repeats_over_the_run() -> None:
    """Each device opens once; repeats press alarm buttons of the first half again, later."""
    devices = alerts.alert_devices(40)
    schedule = alerts.plan(devices, 4, 10.0)
    assert len(schedule) == 44
    assert [item.at_s for item in schedule] == sorted(item.at_s for item in schedule)
    assert all(0 < item.at_s < 10.0 for item in schedule)
    firsts = [item for item in schedule if item.count == 1]
    assert len({item.device.id for item in firsts}) == 40
    assert {item.device.alert.rule for item in firsts} == {
        "alarm_pressed",
        "lock_jammed",
        "camera_stream_lost",
    }
    first_at = {item.device.id: item.at_s for item in firsts}
    for repeat in (item for item in schedule if item.count == 2):
        assert repeat.device.alert.rule == "alarm_pressed"
        assert repeat.at_s == pytest.approx(first_at[repeat.device.id] + 5.0)
    assert len({item.key for item in schedule}) == len(schedule)
    with pytest.raises(ValueError, match="--repeats"):
        alerts.plan(devices, 11, 10.0)


def _delivery(
    event: str, device: str, rule: str, count: int, at: float, refusal: str | None = None
) -> Received:
    body = {"id": 1, "event": event, "alert": {"device_id": device, "rule": rule, "count": count}}
    return Received("/carewatch", {}, orjson.dumps(body), refusal, 200, at)


def test_webhook_arrivals_are_the_first_verified_delivery_of_each_change() -> None:
    """A repeated delivery keeps the earliest arrival; a refused one, a call-out and an event
    the bench does not measure are not arrivals; alert.opened counts as count 1."""
    requests = [
        _delivery("alert.opened", "a", "alarm_pressed", 1, 10.0, refusal="no_match"),
        _delivery("alert.opened", "a", "alarm_pressed", 1, 12.0),
        _delivery("alert.opened", "a", "alarm_pressed", 2, 11.0),  # the row moved on since
        _delivery("alert.updated", "a", "alarm_pressed", 2, 20.0),
        _delivery("alert.call_out", "a", "alarm_pressed", 2, 30.0),
        _delivery("alert.resolved", "b", "lock_jammed", 1, 40.0),
    ]
    assert alerts.webhook_arrivals(requests) == {
        ("a", "alarm_pressed", 1): 11.0,
        ("a", "alarm_pressed", 2): 20.0,
    }


def test_pushes_are_measured_for_new_alarms_only() -> None:
    """The notifier pushes new alerts of a response rule: an alarm press, not its repeat, not a
    jammed lock or a lost camera stream."""
    schedule = alerts.plan(alerts.alert_devices(8), 1, 10.0)
    published = {item.key: item.at_s for item in schedule}
    pushed = alerts.pushed_changes(published)
    assert set(pushed) == {
        item.key
        for item in schedule
        if item.count == 1 and item.device.alert.rule == "alarm_pressed"
    }
    assert len(pushed) == 4
    assert alerts.push_arrivals({7: 1.5, 8: 2.5}, {7: ("a", "alarm_pressed")}) == {
        ("a", "alarm_pressed", 1): 1.5
    }


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert alerts.percentile(values, 0.5) == 50.0
    assert alerts.percentile(values, 0.99) == 99.0
    assert alerts.percentile([7.0], 0.99) == 7.0


@pytest.mark.slow
def test_small_run_delivers_every_alert(
    postgres_base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5 s run at 300 events/s: every published alert arrives on the stream, every alert
    change at the webhook receiver and every new alarm at the push service (each verified),
    the numbers are positive and ordered, and nothing is left behind."""
    # The run's temporary directory goes where the postgres user can reach it and we can
    # check that it is gone afterwards.
    monkeypatch.setattr(tempfile, "tempdir", str(postgres_base_dir))

    code = main(["bench", "alerts", "--rate", "300", "--duration", "5", "--alerts", "20", "--json"])

    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result.keys() >= AGREED_KEYS | CHANNEL_KEYS
    assert result["alerts"] == 20
    assert result["repeats"] == 2
    assert result["measured"] == result["arrived"] == 22
    assert result["lost"] == 0
    # Every alert change is a webhook; the 10 alarm presses among the 20 new alerts are pushed.
    assert result["webhook_measured"] == result["webhook_arrived"] == 22
    assert result["push_measured"] == result["push_arrived"] == 10
    for channel in ("", "webhook_", "push_"):
        assert result[f"{channel}lost"] == 0, result
        percentiles = [
            result[f"{channel}{key}"] for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        ]
        for value in percentiles:
            assert isinstance(value, int | float), (channel, result)
            assert value > 0, (channel, result)
            assert math.isfinite(value), (channel, result)
        assert percentiles == sorted(percentiles), (channel, result)
        # Loopback: an alert slower than the grace would have counted as lost.
        assert result[f"{channel}max_ms"] < 10_000, (channel, result)
    assert result["webhook_refused"] == result["push_refused"] == 0
    # A webhook and a push are sent once the alert is committed, which the stream also waits for.
    assert result["webhook_p50_ms"] > result["min_ms"], result
    assert result["push_p50_ms"] > result["min_ms"], result
    # Paced, not flooded, and at least the asked rate (within the warning's tolerance).
    assert 300 * 0.98 <= result["background_eps"] < 300 * 1.5, result
    assert result["background_events"] >= 1500
    assert result["no_subscribers"] == 0
    assert result["unstored_events"] == 0
    assert result["stream_reconnects"] == 0
    assert not list(postgres_base_dir.iterdir()), "the run's directory was left behind"
