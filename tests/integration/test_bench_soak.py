"""``carewatch bench soak``: its arithmetic, and a compressed run with every fault, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.bench.soak_faults import FAULT_KINDS, schedule
from tools.bench.soak_stats import (
    FaultWindow,
    RssSample,
    latency_by_window,
    memory_trend,
    round_peaks,
    slowest_outside,
)

AGREED_KEYS = {
    "published",
    "acked",
    "stored",
    "lost",
    "duplicated",
    "unrouted",
    "dead_letters",
    "p50_outside_ms",
    "p99_outside_ms",
    "p50_inside_ms",
    "p99_inside_ms",
    "sse_reconnections",
    "faults",
    "rss",
}
SERVICES = {"gateway-0", "gateway-1", "api-0", "api-1", "broker", "postgres", "proxy"}


def test_schedule_takes_the_kinds_in_turn_and_leaves_the_end_alone() -> None:
    """One fault per interval, the five kinds in turn, none in the last half interval."""
    plan = schedule(300.0, 50.0)
    assert [at for at, _ in plan] == [50.0, 100.0, 150.0, 200.0, 250.0]
    assert [kind for _, kind in plan] == list(FAULT_KINDS)
    assert [kind for _, kind in schedule(330.0, 50.0)][5:] == [FAULT_KINDS[0]]
    assert schedule(40.0, 50.0) == []


def test_latency_is_split_by_whether_the_journey_met_a_fault_window() -> None:
    """A sample published inside a window, or still in flight when it opened, counts there; one
    that arrived before it opened, or was published after it ended, does not; a missing one
    counts inside once any window opened after its publish."""
    window = FaultWindow("broker_restart", "broker", 100.0, 101.0, 102.0)
    samples = [
        (99.0, 99.1),  # arrived before the fault
        (99.8, 100.9),  # in flight when it struck
        (100.5, 103.0),  # published inside
        (102.5, 102.7),  # published after the end
        (150.0, None),  # lost after every window
        (101.0, None),  # lost inside
    ]
    split = latency_by_window(samples, [window])
    assert split["outside"]["samples"] == 2
    assert split["outside"]["max_ms"] == pytest.approx(200.0)
    assert split["outside"]["never_arrived"] == 1
    assert split["inside"]["samples"] == 2
    assert split["inside"]["p50_ms"] == pytest.approx(1100.0)
    assert split["inside"]["max_ms"] == pytest.approx(2500.0)
    assert split["inside"]["never_arrived"] == 1


def test_round_peaks_tell_a_working_set_from_a_leak() -> None:
    """A step in every round is no growth; a peak rising by 10 MB a round is, whichever process
    (pid) filled the role; a partial last round and the time before the first are left out."""

    def samples(peak_of_round: Callable[[int], int]) -> list[RssSample]:
        return [
            RssSample(
                at,
                pid=1 + int(at) // 500,
                rss_kib=(50 + peak_of_round(int(at - 100) // 250) * (at % 250 == 150)) * 1024,
            )
            for at in range(0, 1400, 10)
        ]

    steady = round_peaks(
        samples(lambda _: 20), first_round_at=100.0, round_s=250.0, ended_at=1350.0
    )
    assert steady == {"round_peaks_mb": [70.0] * 5, "peak_growth_pct": 0.0}
    leaking = round_peaks(samples(lambda n: 20 + 10 * n), 100.0, 250.0, 1350.0)
    assert leaking["round_peaks_mb"] == [70.0, 80.0, 90.0, 100.0, 110.0]
    assert leaking["peak_growth_pct"] == pytest.approx(37.5)
    assert round_peaks(samples(lambda _: 20), 100.0, 250.0, 700.0)["peak_growth_pct"] is None


def test_slowest_outside_says_how_long_after_which_fault() -> None:
    """Only samples outside windows, slowest first, each placed after the window before it."""
    window = FaultWindow("gateway_kill", "gateway-0", 100.0, 101.0, 102.0)
    samples = [
        (50.0, 50.2),
        (99.5, 101.0),  # in flight when the window opened: inside
        (101.0, 109.0),
        (103.0, 104.5),
        (150.0, None),
        (160.0, 160.1),
    ]
    rows = slowest_outside(samples, [window], run_started_at=10.0, count=2)
    assert rows == [
        {"latency_ms": 1500.0, "at_s": 93.0, "after_fault": "gateway_kill", "after_window_s": 1.0},
        {
            "latency_ms": pytest.approx(200.0),
            "at_s": 40.0,
            "after_fault": None,
            "after_window_s": None,
        },
    ]


def test_memory_trend_fits_the_last_process_after_its_warm_up() -> None:
    """A steady 1 MB per 100 s after the warm-up is 36 MB/h; a restarted process starts anew."""
    steady = [RssSample(1000.0 + t, 7, 100 * 1024 + int(t / 100 * 1024)) for t in range(0, 401, 20)]
    trend = memory_trend(steady, warm_up_until=1100.0, warm_up_s=100.0)
    assert trend["slope_mb_per_h"] == pytest.approx(36.0, rel=0.02)
    assert trend["start_mb"] == pytest.approx(101.0, abs=0.1)
    assert trend["end_mb"] == pytest.approx(104.0, abs=0.1)
    assert trend["restarts"] == 0
    restarted = [RssSample(1000.0, 6, 500 * 1024), *steady[10:]]
    again = memory_trend(restarted, warm_up_until=1000.0, warm_up_s=100.0)
    assert again["restarts"] == 1
    assert again["pid"] == 7
    assert again["start_mb"] == pytest.approx(103.0, abs=0.1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_compressed_soak_injects_every_fault_and_loses_nothing_it_acknowledged(
    postgres_base_dir: Path,
) -> None:
    """30 s at 300 events/s with a fault every 5 s: every kind is injected and heals, nothing
    acknowledged is lost or stored twice, the alarms reach the streams, memory is sampled."""
    env = {**os.environ, "TMPDIR": str(postgres_base_dir)}
    argv = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]
    result = subprocess.run(
        [
            *argv,
            "bench",
            "soak",
            "--minutes=0.5",
            "--rate=300",
            "--fault-every=5",
            "--sse-clients=2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data.keys() >= AGREED_KEYS

    assert {fault["kind"] for fault in data["faults"]} == set(FAULT_KINDS)
    for fault in data["faults"]:
        assert 0 <= fault["recovered_s"] <= fault["end_to_end_s"] < 120, fault
        assert "not on every stream" not in fault["note"], fault

    events = data["events"]
    assert data["lost"] == 0, events["lost_ids"]
    assert data["duplicated"] == 0
    assert events["unacked_at_end"] == 0
    # An event refused with PUBACK 16 (no subscriber) is sent again until Success: acked,
    # and counted in "lost" like any other, the broker restart included.
    assert data["published"] == data["acked"] + events["refused"] + events["unacked_at_end"]
    assert events["refused"] == 0
    # What the broker refused for want of a subscriber, it refused around its restart.
    assert set(data["unrouted_by_fault"]) <= {"broker_restart"}
    assert data["stored"] == data["acked"] + events["stored_without_puback"]
    assert data["achieved_eps"] > 250
    assert data["dead_letters"] == 0

    alerts = data["alerts"]
    assert alerts["presses"] == 60
    assert alerts["presses_unacked"] == 0  # refused with 16 or not, every press got through
    assert alerts["outside"]["never_arrived"] == alerts["inside"]["never_arrived"] == 0
    assert alerts["outside"]["samples"] + alerts["inside"]["samples"] > 0
    assert alerts["inside"]["samples"] > 0
    # The API process that was killed had SSE clients or not; either way they are counted.
    assert data["sse_reconnections"] >= 0

    assert set(data["rss"]) == SERVICES
    for role, trend in data["rss"].items():
        assert trend["samples"] >= 1, role
        assert 1 < trend["last_mb"] < 2000, (role, trend)
    assert data["rss"]["gateway-0"]["restarts"] >= 1
    assert data["rss"]["gateway-1"]["restarts"] == 0
    assert data["mqtt_tls"] is True
