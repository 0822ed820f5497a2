"""``carewatch bench ingest``: a small run end to end (a smoke test, not a timed one)."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.cli import main
from devices.envelope import DeviceRef, Event, parse
from tools.bench import hardware, workload

EVENTS = 2000
REPEAT = 2
AGREED_KEYS = {
    "events",
    "gateway_eps",
    "naive_eps",
    "broker_limit_eps",
    "copy_limit_eps",
    "speedup_vs_naive",
    "fraction_of_limit",
}


def test_workload_is_valid_for_the_gateway_parser() -> None:
    """Every generated envelope parses as an event of its device, and ids never repeat."""
    now = datetime.now(UTC)
    data = workload.make_workload(events=500, devices=40, publishers=3, now=now)
    registry = {d.id: DeviceRef(d.id, d.kind, active=True) for d in data.devices}
    types: Counter[str] = Counter()
    for event in data.events:
        device = data.devices[event.device]
        result = parse(device.topic, event.payload, now, registry)
        assert isinstance(result, Event), result
        assert (result.device_id, result.type) == (device.id, event.type)
        types[event.type] += 1
    assert len({event.event_id for event in data.events}) == len(data.events)
    assert types["heartbeat"] > len(data.events) / 2
    assert len(types) > 3, types
    assert sum(data.share_counts(len(data.events))) == len(data.events)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="needs mosquitto-clients (mosquitto_sub)"
)
def test_small_run_prints_every_number_and_stores_every_event(
    postgres_base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2,000-event run with two repetitions and two gateways measures every part, loses
    nothing, names the machine, and leaves nothing behind."""
    # The run's temporary directory goes where the postgres user can reach it and we can
    # check that it is gone afterwards.
    monkeypatch.setattr(tempfile, "tempdir", str(postgres_base_dir))

    code = main(
        [
            "bench",
            "ingest",
            "--events",
            str(EVENTS),
            "--devices",
            "40",
            "--repeat",
            str(REPEAT),
            "--gateways",
            "2",
            "--json",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result.keys() >= AGREED_KEYS
    assert result["events"] == EVENTS
    for key in AGREED_KEYS - {"events"}:
        value = result[key]
        assert isinstance(value, int | float), (key, value)
        assert value > 0, (key, value)
        assert math.isfinite(value), (key, value)
    for key in ("gateway_eps", "naive_eps", "broker_limit_eps", "copy_limit_eps"):
        # Loopback on any machine: fewer than 10 events/s or more than 10 million is a bug.
        assert 10 < result[key] < 10_000_000, (key, result[key])
    assert result["speedup_vs_naive"] == pytest.approx(
        result["gateway_eps"] / result["naive_eps"], rel=0.01
    )
    # Every repetition is kept, each a fraction of its own limits; the agreed key is their median.
    repetitions = result["repetitions"]
    assert len(repetitions) == REPEAT
    for figures in repetitions:
        limit = min(figures["broker_limit_eps"], figures["copy_limit_eps"])
        assert figures["fraction_of_limit"] == pytest.approx(
            figures["gateway_eps"] / limit, rel=0.01
        )
        assert figures["delivered"] == dict.fromkeys(
            ("copy", "broker", "mosquitto_sub", "gateway"), EVENTS
        )
        # Both gateways took part, and together they stored every event once.
        assert len(figures["gateway_events"]) == 2
        assert all(count > 0 for count in figures["gateway_events"]), figures
        assert sum(figures["gateway_events"]) == EVENTS
        assert sum(figures["gateway_shares"]) == pytest.approx(1, abs=0.002)
    assert result["fraction_of_limit"] == pytest.approx(
        statistics.median(figures["fraction_of_limit"] for figures in repetitions), abs=0.002
    )
    assert [mix["other_share"] for mix in result["mixes"]] == [workload.REALISTIC_OTHER_SHARE]
    # Every measurement moved exactly what it was given: nothing lost, nothing twice.
    assert result["delivered"] == {
        "copy": EVENTS,
        "broker": EVENTS,
        "mosquitto_sub": EVENTS,
        "gateway": EVENTS,
        "naive": result["naive_events"],
    }
    assert result["naive_events"] == EVENTS
    assert result["postgres_settings"]["fsync"] == "on"
    # The machine beside the figures: its CPU and the disk's fsync rate under PostgreSQL.
    machine = result["machine"]
    assert machine["cpu_model"] == hardware.cpu_model()
    assert machine["cpus_available"] >= 1
    fsync = machine["fsync"]
    if hardware.pg_test_fsync_binary() is None:
        assert fsync["fdatasync_ops_per_s"] is None
        assert fsync["note"]
    else:
        assert fsync["fdatasync_ops_per_s"] > 0, fsync
    assert not list(postgres_base_dir.iterdir()), "the run's directory was left behind"
