"""``carewatch bench alerts``: a small run end to end (a smoke test, not a timed one)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest

from app.cli import main
from tools.bench import alerts

AGREED_KEYS = {"alerts", "background_eps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "lost"}


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


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert alerts.percentile(values, 0.5) == 50.0
    assert alerts.percentile(values, 0.99) == 99.0
    assert alerts.percentile([7.0], 0.99) == 7.0


@pytest.mark.slow
def test_small_run_delivers_every_alert(
    postgres_base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5 s run at 300 events/s: every published alert arrives on the stream, the numbers
    are positive and ordered, and nothing is left behind."""
    # The run's temporary directory goes where the postgres user can reach it and we can
    # check that it is gone afterwards.
    monkeypatch.setattr(tempfile, "tempdir", str(postgres_base_dir))

    code = main(["bench", "alerts", "--rate", "300", "--duration", "5", "--alerts", "20", "--json"])

    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result.keys() >= AGREED_KEYS
    assert result["alerts"] == 20
    assert result["repeats"] == 2
    assert result["measured"] == result["arrived"] == 22
    assert result["lost"] == 0
    percentiles = [result[key] for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
    for value in percentiles:
        assert isinstance(value, int | float), result
        assert value > 0, result
        assert math.isfinite(value), result
    assert percentiles == sorted(percentiles), result
    # Loopback: an alert slower than the grace would have counted as lost.
    assert result["max_ms"] < 10_000
    # Paced, not flooded, and at least the asked rate (within the warning's tolerance).
    assert 300 * 0.98 <= result["background_eps"] < 300 * 1.5, result
    assert result["background_events"] >= 1500
    assert result["no_subscribers"] == 0
    assert result["unstored_events"] == 0
    assert result["stream_reconnects"] == 0
    assert not list(postgres_base_dir.iterdir()), "the run's directory was left behind"
